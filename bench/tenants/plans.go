package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

var plans = flag.Bool("plans", false, "instead of the other measures: seed a busy tenant and an empty one (in the 10-tenant database) and compare, for each statement the tools send, the plan PostgreSQL's plan cache chooses under plan_cache_mode force_custom_plan and force_generic_plan (auto_explain's plan, and the median time of 100 executions in each mode, planning and round trip included)")

// recTx is a pgx.Tx that runs the tools' statements on the tenant's
// transaction and records each distinct one (text after pgx.NamedArgs'
// rewriting, with its arguments).
type recTx struct {
	pgx.Tx
	conn *pgx.Conn
	seen map[string]bool
	list []recorded
}

type recorded struct {
	sql  string
	args []any
}

func (r *recTx) record(ctx context.Context, sql string, args []any) {
	if len(args) > 0 {
		if rw, ok := args[0].(pgx.QueryRewriter); ok {
			s, rest, err := rw.RewriteQuery(ctx, r.conn, sql, args[1:])
			if err == nil {
				sql, args = s, rest
			}
		}
	}
	if !r.seen[sql] {
		r.seen[sql] = true
		r.list = append(r.list, recorded{sql, args})
	}
}

func (r *recTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	r.record(ctx, sql, args)
	return r.Tx.Query(ctx, sql, args...)
}

func (r *recTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	r.record(ctx, sql, args)
	return r.Tx.QueryRow(ctx, sql, args...)
}

func (r *recTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	r.record(ctx, sql, args)
	return r.Tx.Exec(ctx, sql, args...)
}

// planMix is every tenant read and write of the tools the plan comparison
// covers: the index mix and the statements it leaves out.
func planMix(ctx context.Context, tx pgx.Tx, b *busyTenant) error {
	if err := toolMix(ctx, tx, b, 0); err != nil {
		return err
	}
	p := ""
	if len(b.pids) > 0 {
		p = b.pids[0]
	}
	if _, err := store.CountSearchTerms(ctx, tx, "bravo report"); err != nil {
		return err
	}
	for _, f := range []store.DocumentFilter{{Limit: 5}, {Tag: "alpha", Limit: 5}} {
		if _, _, err := store.ListDocumentTexts(ctx, tx, f, 4096); err != nil {
			return err
		}
	}
	if _, err := store.KeywordCandidates(ctx, tx, "bravo", "", "", 50); err != nil {
		return err
	}
	if _, err := store.SuggestProjectNames(ctx, tx, "Proj", 10); err != nil {
		return err
	}
	if _, err := store.SuggestTags(ctx, tx, "al", 10); err != nil {
		return err
	}
	if _, err := store.FindActiveProjectByName(ctx, tx, "Project 001"); err != nil && err != store.ErrNotFound {
		return err
	}
	if _, _, err := store.ListOpenTodosForReview(ctx, tx, p, time.Now(), 20); err != nil {
		return err
	}
	if _, err := store.CreateProject(ctx, tx, fmt.Sprintf("plan %d", time.Now().UnixNano()), "", "bench"); err != nil {
		return err
	}
	d, err := store.CreateDocument(ctx, tx, store.NewDocument{Title: "plan", Body: "plan body", Tags: []string{"alpha"}, CreatedBy: "bench"})
	if err != nil {
		return err
	}
	title := "plan 2"
	if _, err := store.UpdateDocument(ctx, tx, d.ID, store.DocumentUpdate{Title: &title}); err != nil {
		return err
	}
	if _, err := store.DeleteDocument(ctx, tx, d.ID); err != nil {
		return err
	}
	td, err := store.AddTodo(ctx, tx, "plan", "", "bench")
	if err != nil {
		return err
	}
	_, err = store.DeleteTodo(ctx, tx, td.ID)
	return err
}

// errRolledBack rolls back the recorded mix's writes, so that each
// statement, run again alone, meets the same rows.
var errRolledBack = errors.New("rolled back")

// planReport compares the plans of the tools' statements in a busy tenant
// and an empty one.
func planReport(ctx context.Context, db *store.DB, connString string) (string, error) {
	b, err := seedBusy(ctx, db)
	if err != nil {
		return "", err
	}
	empty, _, err := db.EnsureTenant(ctx, fmt.Sprintf("empty-%d.bench.example", time.Now().UnixNano()), tenancy.Organization)
	if err != nil {
		return "", err
	}
	none := []string{"00000000-0000-4000-8000-000000000000"}
	var notices []string
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return "", err
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Message) }
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	for _, s := range []string{"LOAD 'auto_explain'", "SET auto_explain.log_level = notice", "SET client_min_messages = notice", "SET auto_explain.log_analyze = on", "SET auto_explain.log_timing = off"} {
		if _, err := conn.Exec(ctx, s); err != nil {
			return "", err
		}
	}
	var out strings.Builder
	for _, c := range []struct {
		name string
		t    *tenancy.Tenant
		b    *busyTenant
	}{{"busy", b.t, b}, {"empty", empty, &busyTenant{t: empty, pids: none, todoIDs: none, docIDs: none}}} {
		rt := &recTx{seen: map[string]bool{}}
		err := db.WithTenant(ctx, c.t, func(tx pgx.Tx) error {
			rt.Tx, rt.conn = tx, tx.Conn()
			if err := planMix(ctx, rt, c.b); err != nil {
				return err
			}
			return errRolledBack
		})
		if err != nil && !errors.Is(err, errRolledBack) {
			return "", fmt.Errorf("%s tenant: %w", c.name, err)
		}
		for i, st := range rt.list {
			var plan [2]string
			var per [2]time.Duration
			for m, mode := range []string{"force_custom_plan", "force_generic_plan"} {
				notices = notices[:0]
				p, d, err := explainIn(ctx, conn, c.t, st, mode, &notices)
				if err != nil {
					return "", fmt.Errorf("%s tenant, statement %d: %w\n%s", c.name, i, err, st.sql)
				}
				plan[m], per[m] = p, d
			}
			same := shape(plan[0]) == shape(plan[1])
			fmt.Fprintf(&out, "\n### %s tenant, statement %d: %s\nsame plan: %v; per execution (median of 100, planning and round trip included): custom %.0f µs, generic %.0f µs\ncustom nodes: %s\ngeneric nodes: %s\n",
				c.name, i, oneLine(st.sql), same, us(per[0]), us(per[1]), shape(plan[0]), shape(plan[1]))
			if !same {
				fmt.Fprintf(&out, "custom:\n%s\ngeneric:\n%s\n", plan[0], plan[1])
			} else {
				fmt.Fprintf(&out, "plan:\n%s\n", plan[1])
			}
		}
	}
	return out.String(), nil
}

// explainIn runs st in t's schema as t's role, prepared, under
// plan_cache_mode mode: once with auto_explain (the plan the plan cache
// used, from *notices), then 50 times, and returns the plan and the mean
// time of one execution. Everything is rolled back.
func explainIn(ctx context.Context, conn *pgx.Conn, t *tenancy.Tenant, st recorded, mode string, notices *[]string) (string, time.Duration, error) {
	var times []time.Duration
	run := func(n int) error {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		if _, err := tx.Exec(ctx, "SELECT set_config('search_path', $1, true), set_config('role', $2, true), set_config('plan_cache_mode', $3, true)",
			pgx.Identifier{t.Schema}.Sanitize(), t.DBRole, mode); err != nil {
			return err
		}
		if _, err := conn.Prepare(ctx, "plan_probe", st.sql); err != nil {
			return err
		}
		defer func() { _ = conn.Deallocate(context.WithoutCancel(ctx), "plan_probe") }()
		for range n {
			if _, err := tx.Exec(ctx, "SAVEPOINT p"); err != nil {
				return err
			}
			t0 := time.Now()
			rows, err := tx.Query(ctx, "plan_probe", st.args...)
			if err != nil {
				return err
			}
			rows.Close()
			times = append(times, time.Since(t0))
			if err := rows.Err(); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT p"); err != nil {
				return err
			}
		}
		return nil
	}
	if _, err := conn.Exec(ctx, "SET auto_explain.log_min_duration = 0"); err != nil {
		return "", 0, err
	}
	if err := run(1); err != nil {
		return "", 0, err
	}
	var plan string
	for _, n := range *notices {
		if strings.Contains(n, "Query Text:") {
			plan = n
		}
	}
	if i := strings.Index(plan, "\n"); i >= 0 {
		plan = plan[i+1:]
	}
	if _, err := conn.Exec(ctx, "SET auto_explain.log_min_duration = -1"); err != nil {
		return "", 0, err
	}
	times = times[:0]
	if err := run(101); err != nil {
		return "", 0, err
	}
	slices.Sort(times)
	return plan, times[len(times)/2], nil
}

var planNode = regexp.MustCompile(`^\s*(->\s+)?([A-Z][^(]*?)\s+\(cost=`)

// shape is a plan's nodes (their kinds, tables and indexes) without the
// estimates, conditions and figures: what the planner chose.
func shape(plan string) string {
	var nodes []string
	for l := range strings.SplitSeq(plan, "\n") {
		if m := planNode.FindStringSubmatch(l); m != nil {
			nodes = append(nodes, m[2])
		}
	}
	return strings.Join(nodes, " / ")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
