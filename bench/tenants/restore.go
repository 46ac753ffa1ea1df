package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// benchSecret chains the bench's audit records, and those of the servers
// -serve starts (GATEHOUSE_AUDIT_KEY), so that -restore can verify them.
// GATEHOUSE_AUDIT_KEY is a comma-separated list, so the secret has no comma
// (with one, gatehouse serve refused to start: "the key that chains is 15
// bytes"). Records the bench itself chained before were chained with
// oldBenchSecret.
const (
	benchSecret    = "bench audit key: 32 bytes long.."
	oldBenchSecret = "bench audit key, 32 bytes long.."
)

var benchAuditKey = store.NewAuditKey([]byte(benchSecret))

// writeAudit writes one audit record in each tenant and chains it.
func writeAudit(ctx context.Context, db *store.DB, ts []*tenancy.Tenant) error {
	for _, t := range ts {
		err := db.WithTenant(ctx, t, func(tx pgx.Tx) error {
			return store.InsertAudit(ctx, tx, &store.AuditRecord{Decision: "ALLOWED", Tool: "add_todo", Subject: "bench"})
		})
		if err != nil {
			return err
		}
		if _, err := db.ChainAudit(ctx, t, benchAuditKey, 100); err != nil {
			return err
		}
	}
	return nil
}

// restoreAndVerify follows docs/operations.md, Backups: the roles
// (pg_dumpall --roles-only) and the dump restored into a fresh cluster
// (pg_restore --no-owner), then `audit verify` of every tenant there.
func restoreAndVerify(ctx context.Context, e *store.Embedded, data, dump string, logger *slog.Logger, add func(what, format string, args ...any)) error {
	dir := data + "-restore"
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	roles := filepath.Join(data, "roles.sql")
	if out, err := e.Run(ctx, "pg_dumpall", "--roles-only", "--no-role-passwords", "--file", roles, "--dbname", e.ConnString("")); err != nil {
		return fmt.Errorf("pg_dumpall: %v: %.300s", err, out)
	}
	defer os.Remove(roles)
	t0 := time.Now()
	r, err := store.StartEmbedded(ctx, store.EmbeddedOptions{DataDir: dir, Logger: logger})
	if err != nil {
		return err
	}
	defer func() { _ = r.Stop(context.Background()) }()
	// Errors for roles that exist already (postgres) are expected.
	_, _ = r.Run(ctx, "psql", "--quiet", "--file", roles, "--dbname", r.ConnString("postgres"))
	if out, err := r.Run(ctx, "pg_restore", "--no-owner", "--dbname", r.ConnString(""), dump); err != nil {
		return fmt.Errorf("pg_restore: %v: %.500s", err, out)
	}
	add("restore into a fresh cluster (roles, then pg_restore --no-owner)", "%v", time.Since(t0).Round(time.Millisecond))
	rdb, err := store.Open(ctx, r.ConnString(""), &store.Options{ControlConns: 4, TenantConns: 4, Logger: logger})
	if err != nil {
		return err
	}
	defer rdb.Close()
	// Records chained by -serve's gatehouse serve use the bench key too
	// (GATEHOUSE_AUDIT_KEY); older runs' used the key kept in the database.
	keys := []store.AuditKey{benchAuditKey, store.NewAuditKey([]byte(oldBenchSecret))}
	if secret, err := rdb.Secret(ctx, "audit-key"); err == nil && len(secret) > 0 {
		keys = append(keys, store.NewAuditKey(secret))
	}
	t0 = time.Now()
	restored, records, err := verifyAll(ctx, rdb, keys)
	if err != nil {
		return err
	}
	d := time.Since(t0)
	// A kept cluster may hold chains that do not verify for reasons of its
	// own (earlier bench runs chained one tenant with the bench's key and the
	// database's in turn: "written with a retired key"). The restore is
	// right when every tenant verifies there exactly as in the source.
	sdb, err := store.Open(ctx, e.ConnString(""), &store.Options{ControlConns: 4, TenantConns: 4, Logger: logger})
	if err != nil {
		return err
	}
	defer sdb.Close()
	source, _, err := verifyAll(ctx, sdb, keys)
	if err != nil {
		return err
	}
	var intact, same, differ int
	var example string
	for k, p := range source {
		q, ok := restored[k]
		switch {
		case !ok || p != q:
			differ++
			if differ <= 3 {
				fmt.Fprintf(os.Stderr, "audit verify %s: source %q, restored %q (present: %v)\n", k, p, q, ok)
			}
		case p == "":
			intact++
		default:
			same++
			example = k + ": " + p
		}
	}
	for k := range restored {
		if _, ok := source[k]; !ok {
			differ++ // a tenant only in the restore
		}
	}
	add("audit verify of every tenant in the restored cluster, compared with the source", "%d tenants, %d records, %v: %d intact, %d with the same finding as in the source (%.200s), %d different",
		len(restored), records, d.Round(time.Millisecond), intact, same, example, differ)
	if differ > 0 {
		return fmt.Errorf("audit verify: %d tenants verify differently after the restore", differ)
	}
	return nil
}

// verifyAll verifies every tenant's audit chain with keys and returns each
// tenant's finding (empty: intact) by key, and the records verified.
func verifyAll(ctx context.Context, db *store.DB, keys []store.AuditKey) (map[string]string, int, error) {
	ts, err := db.FindTenants(ctx)
	if err != nil {
		return nil, 0, err
	}
	out := make(map[string]string, len(ts))
	var records int
	for _, t := range ts {
		rep, err := db.VerifyAudit(ctx, t, keys...)
		if err != nil {
			return nil, 0, fmt.Errorf("audit verify %s: %w", t.Key, err)
		}
		out[t.Key] = rep.Problem
		records += rep.Verified
	}
	return out, records, nil
}
