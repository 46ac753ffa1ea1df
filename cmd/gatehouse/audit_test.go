package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// auditFixture is a database with tenant acme.com (made by the CLI) whose
// audit log holds n unchained records, the CLI's environment for it, and a
// connection to it (closed when the test ends).
func auditFixture(t *testing.T, n int) (environ map[string]string, db *store.DB, tn *tenancy.Tenant) {
	t.Helper()
	dbURL := storetest.ConnString(t)
	environ = map[string]string{"DATABASE_URL": dbURL, "GATEHOUSE_AUDIT_KEY": cliKey}
	gh(t, environ, "apikey", "create", "--tenant", "acme.com", "--role", "admin")
	ctx := context.Background()
	db, err := store.Open(ctx, dbURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if tn, err = db.FindTenantByKey(ctx, "acme.com"); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			return store.InsertAudit(ctx, tx, &store.AuditRecord{RequestID: fmt.Sprint("r", i), Decision: store.Allowed, Tool: "add_todo", Subject: "github:1"})
		}); err != nil {
			t.Fatal(err)
		}
	}
	return environ, db, tn
}

func TestAuditCommands(t *testing.T) {
	environ, db, tn := auditFixture(t, 4)
	ctx := context.Background()
	// verify chains what is pending, then checks it.
	if code, out, stderr := gh(t, environ, "audit", "verify", "--tenant", "acme.com"); code != 0 || !strings.Contains(out, "intact (4 records verified)") {
		t.Fatalf("verify: %d %q %s", code, out, stderr)
	}
	// The console's audit page shows this verification.
	if cp, err := db.FindAuditCheckpoint(ctx, tn); err != nil || cp.Verified != 4 || cp.Problem != "" {
		t.Errorf("stored checkpoint after verify: %+v %v", cp, err)
	}
	if code, out, _ := gh(t, environ, "audit", "tail", "--tenant", "acme.com", "-n", "2"); code != 0 || strings.Count(out, "ALLOWED") != 2 {
		t.Errorf("tail: %d %q", code, out)
	}
	// Rotation: the new key chains, both verify, in one run.
	environ["GATEHOUSE_AUDIT_KEY"] = newKey + ", " + cliKey
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
	// Another key cannot vouch for the chain: it is unverifiable here, and
	// the report names the key it was chained with.
	environ["GATEHOUSE_AUDIT_KEY"] = "yet another key of 32 bytes or more!"
	code, out, _ = gh(t, environ, "audit", "verify", "--tenant", "acme.com")
	want := "unverifiable here: record 1 (id 1) is chained with key " + store.NewAuditKey([]byte(cliKey)).ID +
		", which is not configured (tampering cannot be told apart from a missing key)"
	if code != 1 || !strings.Contains(out, "UNVERIFIABLE") || !strings.Contains(out, want) {
		t.Errorf("verify with another key: exit %d, %q", code, out)
	}
	code, out, _ = gh(t, environ, "audit", "verify", "--tenant", "acme.com", "--json")
	if code != 1 || !strings.Contains(out, `"unverifiable": true`) {
		t.Errorf("verify --json with another key: exit %d, %q", code, out)
	}
}

const (
	cliKey = "cli test key of 32 bytes or more ......"
	newKey = "new cli test key of 32 bytes or more .."
)

// TestSecretsRule: the secrets the operator generates need 32 bytes as
// given; a 16-byte signing key still works, with a warning and the steps to
// replace it; a short audit key may stay only as a retired one; every
// problem is listed at once, exit 2.
func TestSecretsRule(t *testing.T) {
	long := "0123456789abcdef0123456789abcdef"
	tests := []struct {
		name, signing, audit string
		errs, warns          []string
	}{
		{"long enough", long, long, nil, nil},
		{"one-byte audit key", "", "x", []string{"GATEHOUSE_AUDIT_KEY: the key that chains (the first) is 1 bytes; use 32 or more (openssl rand -base64 32)"}, nil},
		{"31-byte audit key", "", long[:31], []string{"GATEHOUSE_AUDIT_KEY: the key that chains (the first) is 31 bytes"}, nil},
		{"short retired audit key", "", long + ",old", nil, []string{"retired key 2 is 3 bytes"}},
		{"15-byte signing key", long[:15], "", []string{"GATEHOUSE_SIGNING_KEY: secret 1 is 15 bytes; use 32 or more (openssl rand -base64 32)"}, nil},
		{"16-byte signing key", long[:16], "", nil, []string{"GATEHOUSE_SIGNING_KEY is 16 bytes; 32 or more are wanted", "GATEHOUSE_SIGNING_KEY=<new>,<old>"}},
		{"both short at once", "short", "x", []string{"GATEHOUSE_SIGNING_KEY: secret 1 is 5 bytes", "GATEHOUSE_AUDIT_KEY: the key that chains"}, nil},
	}
	if _, err := loadConfig(func(k string) string { return map[string]string{"GATEHOUSE_METRICS_TOKEN": "prometheus"}[k] }); err == nil ||
		!strings.Contains(err.Error(), "GATEHOUSE_METRICS_TOKEN: is 10 bytes; use 32 or more") {
		t.Errorf("a short metrics token: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			environ := map[string]string{"GATEHOUSE_SIGNING_KEY": tt.signing, "GATEHOUSE_AUDIT_KEY": tt.audit}
			c, err := loadConfig(func(k string) string { return environ[k] })
			if (err != nil) != (tt.errs != nil) {
				t.Fatalf("err = %v", err)
			}
			for _, w := range tt.errs {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if err != nil {
				code, _, stderr := gh(t, environ, "serve")
				if code != 2 || !strings.Contains(stderr, tt.errs[0]) {
					t.Errorf("serve: exit %d, %s", code, stderr)
				}
				return
			}
			warnings := strings.Join(c.Warnings, "\n")
			if (warnings != "") != (tt.warns != nil) {
				t.Errorf("warnings = %q", warnings)
			}
			for _, w := range tt.warns {
				if !strings.Contains(warnings, w) {
					t.Errorf("warnings lack %q:\n%s", w, warnings)
				}
			}
		})
	}
}

// TestAuditVerifyWaitsForALockedAuditLog: verify run while another session
// holds the tenant's audit log locked (a migration, VACUUM FULL) says it
// waits and then reports the chain, instead of failing (exit 1 is what a
// broken chain gives, and operators alert on it).
func TestAuditVerifyWaitsForALockedAuditLog(t *testing.T) {
	environ, db, tn := auditFixture(t, 1)
	release := storetest.LockTable(t, db, tn.Schema, "audit_log")
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		time.Sleep(1500 * time.Millisecond)
		_ = release()
	}()
	defer func() { <-gone }()
	code, out, stderr := gh(t, environ, "audit", "verify", "--tenant", "acme.com")
	if code != 0 || !strings.Contains(out, "intact (1 records verified)") || strings.Count(stderr, "waiting: the audit log of acme.com is locked") != 1 {
		t.Fatalf("verify beside a lock: exit %d\nstdout: %s\nstderr: %s\nwant one waiting line, then intact", code, out, stderr)
	}
}

// TestAuditVerifyReportsRefusedRecords: records the tenant's audit log
// refused in both their forms, kept out of the chain in the audit intake,
// make verify exit 1 (INCOMPLETE, "complete": false) although the chain is
// intact, since operators alert on the exit status; after the documented
// repair (refused set back to NULL) verify moves and chains them and
// exits 0.
func TestAuditVerifyReportsRefusedRecords(t *testing.T) {
	environ, db, tn := auditFixture(t, 2)
	ctx := context.Background()
	for i := range 2 {
		storetest.RefuseIntakeRecord(t, db, tn, fmt.Sprint("refused-", i), "github:1")
	}
	code, out, stderr := gh(t, environ, "audit", "verify", "--tenant", "acme.com")
	if code != 1 || !strings.Contains(out, "intact (2 records verified)") || !strings.Contains(out, "INCOMPLETE: 2 audit records of acme.com were refused") {
		t.Errorf("verify with refused records: exit %d\nstdout: %s\nstderr: %s\nwant exit 1, the chain intact and INCOMPLETE", code, out, stderr)
	}
	code, out, _ = gh(t, environ, "audit", "verify", "--tenant", "acme.com", "--json")
	if code != 1 || !strings.Contains(out, `"ok": true`) || !strings.Contains(out, `"complete": false`) || !strings.Contains(out, `"refused": 2`) {
		t.Errorf("verify --json with refused records: exit %d, %s", code, out)
	}
	// A broken chain as well: both said, exit 1.
	if _, err := db.Pool().Exec(ctx, "UPDATE "+pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()+" SET tool = 'other' WHERE chain_seq = 1"); err != nil {
		t.Fatal(err)
	}
	if code, out, _ = gh(t, environ, "audit", "verify", "--tenant", "acme.com"); code != 1 || !strings.Contains(out, "TAMPERED") || !strings.Contains(out, "INCOMPLETE") {
		t.Errorf("verify with a broken chain and refused records: exit %d, %s", code, out)
	}
	if _, err := db.Pool().Exec(ctx, "UPDATE "+pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()+" SET tool = 'add_todo' WHERE chain_seq = 1"); err != nil {
		t.Fatal(err)
	}
	// The repair docs/operations.md gives, once the log takes them.
	if _, err := db.Pool().Exec(ctx, "UPDATE gatehouse.audit_intake SET refused = NULL WHERE tenant_id = $1", tn.ID); err != nil {
		t.Fatal(err)
	}
	code, out, _ = gh(t, environ, "audit", "verify", "--tenant", "acme.com", "--json")
	if code != 0 || !strings.Contains(out, `"complete": true`) || !strings.Contains(out, `"verified": 4`) || !strings.Contains(out, `"refused": 0`) {
		t.Errorf("verify after the repair: exit %d, %s", code, out)
	}
}
