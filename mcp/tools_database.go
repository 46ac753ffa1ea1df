package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// databaseTools let a model look at the tenant's tables and read them with
// SQL. query is confined by Postgres itself (see store/query.go); where the
// database cannot confine it (no roles), New does not offer it.
func databaseTools() []*Tool {
	return []*Tool{listTablesTool(), describeTableTool(), queryTool()}
}

// queryHiddenTables are not shown by list_tables (query cannot read them):
// the audit log, and semantic search's vectors (never granted to the query
// role; derived from documents, which it reads).
var queryHiddenTables = []string{"audit_log", "document_chunks"}

type listTablesIn struct{}

type tableInfo struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Rows        int64  `json:"rows" jsonschema:"the number of rows: exact when rows_exact, else PostgreSQL's estimate"`
	Exact       bool   `json:"rows_exact"`
}

type listTablesOut struct {
	Tables []tableInfo `json:"tables"`
}

func (o listTablesOut) Text() string {
	if len(o.Tables) == 0 {
		return "Your workspace has no tables the query tool can read."
	}
	var b strings.Builder
	for _, t := range o.Tables {
		n := plural(t.Rows, "row", "rows")
		if !t.Exact {
			n = "about " + n
		}
		fmt.Fprintf(&b, "- %s (%s)", t.Name, n)
		if t.Description != "" {
			fmt.Fprintf(&b, ": %s", t.Description)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// plural is "1 row", "2 rows", "0 rows".
func plural(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// exactRowsUpTo is how many rows list_tables counts exactly; beyond it, a
// table's size is PostgreSQL's estimate (planner statistics, which before
// the first ANALYZE say 0 or nothing: never shown as a count).
const exactRowsUpTo = 10_000

func listTablesTool() *Tool {
	return newTool(ToolSpec{
		Name: "list_tables", Title: "List tables",
		Description: "Lists the tables of your organisation's workspace that the query tool can read, with their number of rows.",
		Role:        tenancy.Viewer, Scope: identity.ScopeRead, ReadOnly: true, Idempotent: true,
	}, func(ctx context.Context, c *Call, _ listTablesIn) (listTablesOut, error) {
		rows, _ := c.Tx.Query(ctx, `SELECT c.relname, coalesce(obj_description(c.oid, 'pg_class'), ''), greatest(c.reltuples, 0)::bigint, false
			FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v')
			AND c.relname <> ALL($1) ORDER BY c.relname`, queryHiddenTables)
		tables, err := pgx.CollectRows(rows, pgx.RowToStructByPos[tableInfo])
		if err != nil {
			return listTablesOut{}, err
		}
		for i := range tables {
			// Counting at most exactRowsUpTo+1 rows is cheap and exact for
			// the tables a workspace usually has; bigger ones keep the
			// estimate, which is then meaningful.
			var n int64
			if err := c.Tx.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM (SELECT 1 FROM %s LIMIT %d) t",
				pgx.Identifier{tables[i].Name}.Sanitize(), exactRowsUpTo+1)).Scan(&n); err != nil {
				return listTablesOut{}, err
			}
			if n <= exactRowsUpTo {
				tables[i].Rows, tables[i].Exact = n, true
			} else {
				tables[i].Rows = max(tables[i].Rows, n)
			}
		}
		if tables == nil {
			tables = []tableInfo{}
		}
		return listTablesOut{Tables: tables}, nil
	})
}

type describeTableIn struct {
	Table string `json:"table" jsonschema:"a table name from list_tables"`
}

type columnInfo struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Nullable bool   `json:"nullable"`
	Default  string `json:"default,omitempty"`
}

type describeTableOut struct {
	Table   string       `json:"table"`
	Columns []columnInfo `json:"columns"`
}

func (o describeTableOut) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:\n", o.Table)
	for _, col := range o.Columns {
		null := "not null"
		if col.Nullable {
			null = "null"
		}
		fmt.Fprintf(&b, "- %s %s %s", col.Name, col.Type, null)
		if col.Default != "" {
			fmt.Fprintf(&b, " default %s", col.Default)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func describeTableTool() *Tool {
	return newTool(ToolSpec{
		Name: "describe_table", Title: "Describe a table",
		Description: "Shows a workspace table's columns, types and defaults.",
		Role:        tenancy.Viewer, Scope: identity.ScopeRead, ReadOnly: true, Idempotent: true,
		Input: func(s *jsonschema.Schema) { s.Properties["table"].MaxLength = new(63) },
	}, func(ctx context.Context, c *Call, in describeTableIn) (describeTableOut, error) {
		for _, h := range queryHiddenTables {
			if in.Table == h {
				return describeTableOut{}, notFound("table", in.Table)
			}
		}
		rows, _ := c.Tx.Query(ctx, `SELECT column_name, data_type, is_nullable = 'YES', coalesce(column_default, '')
			FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`, in.Table)
		cols, err := pgx.CollectRows(rows, pgx.RowToStructByPos[columnInfo])
		if err == nil && len(cols) == 0 {
			err = notFound("table", in.Table)
		}
		return describeTableOut{Table: in.Table, Columns: cols}, err
	})
}

type queryIn struct {
	SQL   string `json:"sql" jsonschema:"one read-only SELECT (or VALUES/TABLE) statement over your workspace tables"`
	Limit int    `json:"limit,omitempty" jsonschema:"most rows to return, 1 to 1000 (default 200)"`
}

type queryOut struct {
	Columns   []string `json:"columns"`
	Rows      [][]any  `json:"rows"`
	Truncated string   `json:"truncated,omitempty" jsonschema:"why the result was cut short, if it was"`
}

func (o queryOut) Text() string {
	var b strings.Builder
	b.WriteString("| " + strings.Join(o.Columns, " | ") + " |\n|")
	b.WriteString(strings.Repeat("---|", len(o.Columns)) + "\n")
	for _, r := range o.Rows {
		cells := make([]string, len(r))
		for i, v := range r {
			j, _ := json.Marshal(v)
			cells[i] = strings.ReplaceAll(strings.Trim(string(j), `"`), "|", `\|`)
		}
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	b.WriteString(plural(int64(len(o.Rows)), "row", "rows"))
	if o.Truncated != "" {
		fmt.Fprintf(&b, " (cut short: %s)", o.Truncated)
	}
	return b.String()
}

// queryLimits bound one query tool call.
var queryLimits = store.QueryLimits{Timeout: 5 * time.Second, MaxRows: 200, MaxBytes: 512 << 10}

func queryTool() *Tool {
	return newTool(ToolSpec{
		Name: "query", Title: "Query the workspace with SQL",
		Description: "Runs one read-only SQL SELECT over your organisation's workspace tables (see list_tables) and returns the rows as a table. " +
			"At most 5 seconds, 1000 rows and 512 KB.",
		Role: tenancy.Developer, Scope: identity.ScopeRead, ReadOnly: true, Idempotent: true, OwnConnection: true,
		Input: func(s *jsonschema.Schema) {
			s.Properties["sql"].MinLength, s.Properties["sql"].MaxLength = new(1), new(10000)
			s.Properties["limit"].Minimum, s.Properties["limit"].Maximum = new(1.0), new(1000.0)
		},
	}, func(ctx context.Context, c *Call, in queryIn) (queryOut, error) {
		lim := queryLimits
		if in.Limit > 0 {
			lim.MaxRows = in.Limit
		}
		res, err := c.srv.db.Query(ctx, c.Tenant, in.SQL, lim)
		var qe *store.QueryError
		switch {
		case errors.As(err, &qe):
			return queryOut{}, &argRefusal{"the query failed: " + qe.Msg}
		case errors.Is(err, store.ErrQueryUnavailable):
			c.srv.log.Warn("query tool unavailable", "tenant", c.Tenant.Key, "error", err)
			return queryOut{}, userErrorf("the query tool is not available on this server")
		case err != nil:
			return queryOut{}, err
		}
		out := queryOut{Columns: res.Columns, Rows: make([][]any, len(res.Rows)), Truncated: res.Truncated}
		for i, r := range res.Rows {
			out.Rows[i] = make([]any, len(r))
			for j, v := range r {
				out.Rows[i][j] = v
			}
		}
		if out.Columns == nil {
			out.Columns = []string{}
		}
		return out, nil
	})
}
