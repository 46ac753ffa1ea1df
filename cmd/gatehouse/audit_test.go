package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

func TestAuditCommands(t *testing.T) {
	dbURL := storetest.ConnString(t)
	environ := map[string]string{"DATABASE_URL": dbURL, "GATEHOUSE_AUDIT_KEY": "cli test key"}
	gh(t, environ, "apikey", "create", "--tenant", "acme.com", "--role", "admin")
	ctx := context.Background()
	db, err := store.Open(ctx, dbURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tn, _ := db.FindTenantByKey(ctx, "acme.com")
	for i := range 4 {
		_ = db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			return store.InsertAudit(ctx, tx, &store.AuditRecord{RequestID: fmt.Sprint("r", i), Decision: store.Allowed, Tool: "add_todo", Subject: "github:1"})
		})
	}
	// verify chains what is pending, then checks it.
	if code, out, stderr := gh(t, environ, "audit", "verify", "--tenant", "acme.com"); code != 0 || !strings.Contains(out, "intact (4 records verified)") {
		t.Fatalf("verify: %d %q %s", code, out, stderr)
	}
	if code, out, _ := gh(t, environ, "audit", "tail", "--tenant", "acme.com", "-n", "2"); code != 0 || strings.Count(out, "ALLOWED") != 2 {
		t.Errorf("tail: %d %q", code, out)
	}
	// Rotation: the new key chains, both verify, in one run.
	environ["GATEHOUSE_AUDIT_KEY"] = "new cli key, cli test key"
	for range 2 {
		_ = db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			return store.InsertAudit(ctx, tx, &store.AuditRecord{Decision: store.Allowed, Tool: "whoami", Subject: "github:1"})
		})
	}
	if code, out, stderr := gh(t, environ, "audit", "verify", "--tenant", "acme.com"); code != 0 ||
		!strings.Contains(out, "intact (6 records verified)") || !strings.Contains(out, "chained with 2 keys: records 1–4 with key") {
		t.Fatalf("verify across a rotation: %d %q %s", code, out, stderr)
	}
	if _, err := db.Pool().Exec(ctx, "UPDATE "+pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()+" SET subject = 'someone else' WHERE chain_seq = 2"); err != nil {
		t.Fatal(err)
	}
	code, out, _ := gh(t, environ, "audit", "verify", "--tenant", "acme.com")
	if code != 1 || !strings.Contains(out, "TAMPERED") || !strings.Contains(out, "record 2") {
		t.Errorf("verify after tampering: exit %d, %q", code, out)
	}
	code, out, _ = gh(t, environ, "audit", "verify", "--tenant", "acme.com", "--json")
	if code != 1 || !strings.Contains(out, `"ok": false`) || !strings.Contains(out, `"seq": 2`) {
		t.Errorf("verify --json after tampering: exit %d, %q", code, out)
	}
	// Another key cannot vouch for the chain.
	environ["GATEHOUSE_AUDIT_KEY"] = "another key"
	if code, out, _ := gh(t, environ, "audit", "verify", "--tenant", "acme.com"); code != 1 || !strings.Contains(out, "another key") {
		t.Errorf("verify with another key: exit %d, %q", code, out)
	}
}
