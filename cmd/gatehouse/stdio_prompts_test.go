package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/store"
)

// TestStdioPrompts: over `gatehouse stdio` prompts are listed, rendered,
// completed, rate-limited (a JSON-RPC -32029 error) and audited as over
// HTTP.
func TestStdioPrompts(t *testing.T) {
	ss := startStdio(t)
	ctx, cs, cmd, stderr, dbURL, key := ss.ctx, ss.cs, ss.cmd, ss.stderr, ss.dbURL, ss.key
	list, err := cs.ListPrompts(ctx, nil)
	if err != nil || len(list.Prompts) != len(mcp.PromptNames()) {
		t.Errorf("prompts/list for a developer: %+v, %v", list, err)
	}
	if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "create_project", Arguments: map[string]any{"name": "Apollo"}}); err != nil {
		t.Fatal(err)
	}
	res, err := cs.GetPrompt(ctx, &sdk.GetPromptParams{Name: "weekly_review", Arguments: map[string]string{"project": "apollo"}})
	if err != nil || !strings.Contains(res.Messages[0].Content.(*sdk.TextContent).Text, `project "Apollo" of acme.com`) {
		t.Fatalf("weekly_review: %v %+v\n%s", err, res, stderr.String())
	}
	done, err := cs.Complete(ctx, &sdk.CompleteParams{Ref: &sdk.CompleteReference{Type: "ref/prompt", Name: "weekly_review"},
		Argument: sdk.CompleteParamsArgument{Name: "project", Value: "ap"}})
	if err != nil || len(done.Completion.Values) != 1 || done.Completion.Values[0] != "Apollo" {
		t.Errorf("completion: %v %+v", err, done)
	}
	// The 5th request is over the principal's burst of 4 (prompts/list
	// does not count: over stdio only calls do).
	var limited error
	for range 3 {
		if _, err := cs.GetPrompt(ctx, &sdk.GetPromptParams{Name: "weekly_review"}); err != nil {
			limited = err
		}
	}
	var rpc *jsonrpc.Error
	if !errors.As(limited, &rpc) || rpc.Code != -32029 || !strings.Contains(rpc.Message, "rate limit exceeded") {
		t.Errorf("over the limit: %v", limited)
	}
	cs.Close()
	_ = cmd.Wait()
	if strings.Contains(stderr.String(), key) {
		t.Error("the API key appears in the log")
	}

	db, err := store.Open(ctx, dbURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tn, _ := db.FindTenantByKey(ctx, "acme.com")
	var decisions []string
	_ = db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
		recs, _, err := store.FindAudit(ctx, tx, store.AuditFilter{Limit: 100})
		for _, r := range recs {
			if r.ClientIP == "stdio" {
				decisions = append(decisions, r.Decision+":"+r.Tool)
			}
		}
		return err
	})
	got := strings.Join(decisions, " ")
	for _, want := range []string{"ALLOWED:prompts/get:weekly_review", "ALLOWED:completion/complete:weekly_review", "RATE_LIMITED:prompts/get"} {
		if !strings.Contains(got, want) {
			t.Errorf("audit records %q lack %s", got, want)
		}
	}
}
