package main

import (
	"archive/zip"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// TestTenantLifecycleCommands: gatehouse tenant suspend, resume, export
// and delete, in-process against a real database: each changes what it
// says, refuses what it must, and leaves an operator record.
func TestTenantLifecycleCommands(t *testing.T) {
	conn := storetest.ConnString(t)
	environ := map[string]string{"DATABASE_URL": conn}
	if code, _, stderr := gh(t, environ, "apikey", "create", "--tenant", "acme.com", "--role", "admin", "--name", "ci"); code != 0 {
		t.Fatalf("apikey create: %s", stderr)
	}
	if code, _, stderr := gh(t, environ, "apikey", "create", "--tenant", "beta.com", "--role", "admin", "--name", "ci"); code != 0 {
		t.Fatalf("apikey create: %s", stderr)
	}
	status := func() string {
		_, out, _ := gh(t, environ, "tenant", "show", "acme.com", "--json")
		return out
	}
	if code, out, stderr := gh(t, environ, "tenant", "suspend", "acme.com"); code != 0 || out != "tenant acme.com is suspended\n" {
		t.Fatalf("suspend: %d %q %s", code, out, stderr)
	}
	if !strings.Contains(status(), `"status": "suspended"`) {
		t.Errorf("after suspend: %s", status())
	}
	if code, _, _ := gh(t, environ, "tenant", "resume", "acme.com"); code != 0 || !strings.Contains(status(), `"status": "active"`) {
		t.Errorf("after resume: %s", status())
	}
	if code, _, stderr := gh(t, environ, "tenant", "suspend", "nope.example"); code == 0 || !strings.Contains(stderr, "no tenant nope.example") {
		t.Errorf("suspending an unknown tenant: %d %s", code, stderr)
	}

	out := filepath.Join(t.TempDir(), "acme.zip")
	if code, _, stderr := gh(t, environ, "tenant", "export", "acme.com", "--out", out); code != 0 {
		t.Fatalf("export: %s", stderr)
	}
	zr, err := zip.OpenReader(out)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range zr.File {
		names[f.Name] = true
	}
	zr.Close()
	for _, want := range []string{"tenant.json", "members.jsonl", "api_keys.jsonl", "audit_log.jsonl", "todos.jsonl"} {
		if !names[want] {
			t.Errorf("the archive lacks %s (has %v)", want, names)
		}
	}
	if code, _, stderr := gh(t, environ, "tenant", "export", "acme.com", "--out", out); code == 0 {
		t.Error("export overwrote an existing file")
	} else if !strings.Contains(stderr, "exists") {
		t.Errorf("export over a file: %s", stderr)
	}

	for _, confirm := range [][]string{{}, {"--confirm", "acme"}, {"--confirm", "beta.com"}} {
		args := append([]string{"tenant", "delete", "acme.com"}, confirm...)
		if code, _, stderr := gh(t, environ, args...); code != 2 || !strings.Contains(stderr, "--confirm acme.com") {
			t.Errorf("delete %v: exit %d, %s", confirm, code, stderr)
		}
	}
	db, err := store.Open(context.Background(), conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tn, err := db.FindTenantByKey(context.Background(), "acme.com")
	if err != nil {
		t.Fatal(err)
	}
	if code, out, stderr := gh(t, environ, "tenant", "delete", "acme.com", "--confirm", "acme.com"); code != 0 || out != "tenant acme.com deleted\n" {
		t.Fatalf("delete: %d %q %s", code, out, stderr)
	}
	var left int
	if err := db.Pool().QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM pg_namespace WHERE nspname = $1) + (SELECT count(*) FROM pg_roles WHERE rolname = $2) +
		(SELECT count(*) FROM gatehouse.tenants WHERE id = $3) + (SELECT count(*) FROM gatehouse.api_keys WHERE tenant_id = $3)`,
		tn.Schema, tn.DBRole, tn.ID).Scan(&left); err != nil || left != 0 {
		t.Errorf("after delete: %d things left (%v)", left, err)
	}
	rows, _ := db.Pool().Query(context.Background(), "SELECT action FROM gatehouse.operator_audit WHERE tenant_key = 'acme.com' AND via = 'cli' AND operator LIKE 'cli:%' ORDER BY id")
	actions, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || strings.Join(actions, ",") != "suspend,resume,export,delete" {
		t.Errorf("operator records: %v %v", actions, err)
	}
	if code, out, _ := gh(t, environ, "tenant", "list"); code != 0 || strings.Contains(out, "acme.com") || !strings.Contains(out, "beta.com") {
		t.Errorf("tenant list after delete:\n%s", out)
	}
}
