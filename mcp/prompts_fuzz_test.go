package mcp_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// FuzzPromptArguments: any prompt name, argument name and value (raw
// bytes inside the JSON strings, so invalid UTF-8 and any escape reach the
// server), sent to prompts/get and completion/complete, get a clear
// answer: a result or a JSON-RPC error that is not an internal one, never
// a 5xx, an ERROR log line or an ERROR audit record. The seeds run in
// every `go test`; `go test -fuzz FuzzPromptArguments ./mcp/` fuzzes on.
func FuzzPromptArguments(f *testing.F) {
	g := newGatehouse(f)
	key := g.key(f, "acme.com", tenancy.Developer)
	tn, err := g.db.FindTenantByKey(context.Background(), "acme.com")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][3]string{
		{"weekly_review", "project", "Apollo"},
		{"weekly_review", "project", `\u0000`},
		{"weekly_review", "project", `\ud800`},
		{"summarize_documents", "tag", "a\xffb"},
		{"summarize_documents", "tag", `%_\\`},
		{"project_kickoff", "name", strings.Repeat("é", 300)},
		{"project_status", "project", "00000000-0000-4000-8000-000000000000"},
		{"no_such", "\x00", `"`},
		{"weekly_review", `\u0000`, "x"},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	f.Fuzz(func(t *testing.T, prompt, arg, value string) {
		bodies := []string{
			`{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"` + prompt + `","arguments":{"` + arg + `":"` + value + `"}}}`,
			`{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"` + prompt + `"},"argument":{"name":"` + arg + `","value":"` + value + `"}}}`,
		}
		for _, body := range bodies {
			res := post(t, g.url, "Bearer "+key, body)
			got := readBody(t, res)
			if res.StatusCode >= 500 || strings.Contains(got, "-32603") || strings.Contains(got, `"code":0`) || strings.Contains(got, "internal error") {
				t.Fatalf("%q: %d %s", body, res.StatusCode, got)
			}
		}
		if logs := g.logs.String(); strings.Contains(logs, `"level":"ERROR"`) {
			t.Fatalf("the server logged an error:\n%s", logs)
		}
		g.srv.FlushAudit(context.Background())
		var failed int
		_ = g.db.WithTenant(context.Background(), tn, func(tx pgx.Tx) error {
			return tx.QueryRow(context.Background(), "SELECT count(*) FROM audit_log WHERE decision = $1", store.Failed).Scan(&failed)
		})
		if failed > 0 {
			t.Fatalf("%d ERROR audit records", failed)
		}
	})
}
