package mcp_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestFinalWriteTimesOutWaitingForALock: add_todo and create_project send
// their statement, audit record and COMMIT in one message (store.Final).
// When the call's time runs out while the statement waits for a lock,
// the caller (go-sdk client) is told it timed out, and then nothing of the
// call may commit when the lock is released: no todo or project, and the
// call's only record is its failure (never an ALLOWED record beside it).
// A call that is not held up commits with exactly one ALLOWED record.
func TestFinalWriteTimesOutWaitingForALock(t *testing.T) {
	g := newGatehouse(t, func(s *setup) {
		s.options = func(o *mcp.Options) { o.ToolTimeout = 700 * time.Millisecond }
	})
	cs := g.connect(t, g.key(t, "final-timeout.example", tenancy.Admin), "")
	ctx := context.Background()
	var p struct{ ID string }
	if res := call(t, cs, "create_project", map[string]any{"name": "locked"}, &p); res.IsError || p.ID == "" {
		t.Fatalf("create_project: %+v", res.Content)
	}
	tn, err := g.db.FindTenantByKey(ctx, "final-timeout.example")
	if err != nil {
		t.Fatal(err)
	}
	table := func(name string) string { return pgx.Identifier{tn.Schema, name}.Sanitize() }
	count := func(sql string, args ...any) int {
		t.Helper()
		var n int
		if err := g.db.Pool().QueryRow(ctx, sql, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, c := range []struct {
		tool, lock, effect string
		args               map[string]any
	}{{
		tool:   "add_todo",
		lock:   fmt.Sprintf("SELECT 1 FROM %s WHERE id = '%s' FOR UPDATE", table("projects"), p.ID),
		args:   map[string]any{"title": "held up", "project_id": p.ID},
		effect: "SELECT count(*) FROM " + table("todos") + " WHERE title = 'held up'",
	}, {
		tool:   "create_project",
		lock:   fmt.Sprintf("INSERT INTO %s (name, created_by) VALUES ('contended', 'holder')", table("projects")),
		args:   map[string]any{"name": "contended"},
		effect: "SELECT count(*) FROM " + table("projects") + " WHERE name = 'contended' AND created_by <> 'holder'",
	}} {
		records := func(decision string) int {
			return count("SELECT count(*) FROM "+table("audit_log")+" WHERE tool = $1 AND decision = $2", c.tool, decision)
		}
		allowedBefore := records("ALLOWED")
		holder, err := g.db.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := holder.Exec(ctx, c.lock); err != nil {
			t.Fatal(err)
		}
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: c.tool, Arguments: c.args})
		if rerr := holder.Rollback(ctx); rerr != nil {
			t.Fatal(rerr)
		}
		if err != nil {
			t.Fatalf("%s: %v", c.tool, err)
		}
		text := ""
		if len(res.Content) == 1 {
			if tc, ok := res.Content[0].(*sdk.TextContent); ok {
				text = tc.Text
			}
		}
		if !res.IsError || !strings.Contains(text, "timed out") {
			t.Errorf("%s held up past its time: %v %q, want a timeout", c.tool, res.IsError, text)
		}
		time.Sleep(time.Second) // a write still queued in PostgreSQL would commit by now
		if n := count(c.effect); n != 0 {
			t.Errorf("%s reported timed out, but its effect committed (%d rows)", c.tool, n)
		}
		if n := records("ALLOWED") - allowedBefore; n != 0 {
			t.Errorf("%s reported timed out, but %d ALLOWED records committed", c.tool, n)
		}
		if n := count("SELECT count(*) FROM "+table("audit_log")+" WHERE tool = $1 AND decision <> 'ALLOWED' AND reason LIKE '%timeout%'", c.tool); n != 1 {
			t.Errorf("%s: %d failure records, want 1", c.tool, n)
		}
		// Not held up: one effect, one ALLOWED record.
		if res := call(t, cs, c.tool, c.args, nil); res.IsError {
			t.Fatalf("%s not held up: %+v", c.tool, res.Content)
		}
		if n := records("ALLOWED") - allowedBefore; n != 1 {
			t.Errorf("%s not held up: %d ALLOWED records, want 1", c.tool, n)
		}
	}
}

// TestToolFailingAfterItsFinalStatement: a tool that fails after its final
// statement (store.Final) committed its effect with the call's ALLOWED
// record is answered with an error, and the call keeps that one record: a
// second, failure record would say the call both did and did not happen.
func TestToolFailingAfterItsFinalStatement(t *testing.T) {
	g := newGatehouse(t)
	mcp.RegisterFailAfterFinal(g.srv)
	cs := g.connect(t, g.key(t, "fail-after-final.example", tenancy.Admin), "")
	res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "fail_after_final", Arguments: map[string]any{"title": "made"}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.IsError {
		t.Errorf("a tool that failed was answered as a success: %+v", res.Content)
	}
	ctx := context.Background()
	tn, err := g.db.FindTenantByKey(ctx, "fail-after-final.example")
	if err != nil {
		t.Fatal(err)
	}
	var todos int
	if err := g.db.Pool().QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{tn.Schema, "todos"}.Sanitize()+" WHERE title = 'made'").Scan(&todos); err != nil {
		t.Fatal(err)
	}
	rows, err := g.db.Pool().Query(ctx, "SELECT decision FROM "+pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()+" WHERE tool = 'fail_after_final'")
	if err != nil {
		t.Fatal(err)
	}
	decisions, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if todos != 1 || len(decisions) != 1 || decisions[0] != "ALLOWED" {
		t.Errorf("%d todos, records %v; want the todo and its one ALLOWED record", todos, decisions)
	}
}
