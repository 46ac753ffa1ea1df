package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// statements, with -pgss, resets t's pg_stat_statements when requests is
// 0 (before a measurement), else prints the statements that took the most
// execution time during it, per request of tool (on stderr). Planning,
// parsing and commit's WAL flush are not in these times: they say which
// statements cost, not the whole of PostgreSQL's CPU.
func statements(t *target, tool string, requests int) {
	if !pgss || t.dbURL == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, t.dbURL)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgss %s: %v\n", t.name, err)
		return
	}
	defer conn.Close(ctx)
	if requests == 0 {
		if _, err := conn.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
			fmt.Fprintf(os.Stderr, "pgss %s: %v\n", t.name, err)
			return
		}
		_, _ = conn.Exec(ctx, "SELECT pg_stat_statements_reset()")
		return
	}
	rows, err := conn.Query(ctx, `SELECT calls, total_exec_time, rows, query FROM pg_stat_statements
		WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY total_exec_time DESC LIMIT 14`)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgss %s: %v\n", t.name, err)
		return
	}
	defer rows.Close()
	fmt.Fprintf(os.Stderr, "\npg_stat_statements, %s, %s, %d requests: calls/req, exec µs/req, µs/call, rows/call, statement\n", t.name, tool, requests)
	for rows.Next() {
		var calls, nrows int64
		var total float64
		var q string
		if err := rows.Scan(&calls, &total, &nrows, &q); err != nil {
			return
		}
		q = strings.Join(strings.Fields(q), " ")
		if len(q) > 110 {
			q = q[:110]
		}
		n := float64(requests)
		fmt.Fprintf(os.Stderr, "  %6.3f %7.1f %7.1f %6.1f  %s\n", float64(calls)/n, total*1000/n, total*1000/float64(calls), float64(nrows)/float64(calls), q)
	}
}
