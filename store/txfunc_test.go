package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// TestCommitCutShortByItsContext: a transaction whose COMMIT is still
// running in PostgreSQL when its context ends must not commit behind its
// caller's back. Here COMMIT waits: a deferred constraint trigger on the
// tenant's audit log (or the operator log) takes an advisory lock another
// session holds (as a slow WAL flush or a deferred check would make it
// wait). pgx alone stops reading and closes the connection, and
// PostgreSQL commits once the lock is released: the caller, told the
// transaction failed, records a failure, a second record of one request.
// Either the function reports success and the record exists, or it fails
// with the context's error and the record never appears. Members: a
// tenant transaction on the tool-call pool (WithTenant: resource reads,
// the step-up challenge's record), one on the control pool
// (WithTenantControl: aggregated refusals), and a control-plane one
// (RecordOperatorAction).
func TestCommitCutShortByItsContext(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "commit-cancel.example")
	const lockKey = 7_421_337
	// The trigger function runs as the tenant's role in tenant
	// transactions: it lives in the tenant's schema.
	for _, table := range []string{pgx.Identifier{tn.Schema, "audit_log"}.Sanitize(), "gatehouse.operator_audit"} {
		fn := pgx.Identifier{tn.Schema, "wait_at_commit"}.Sanitize()
		for _, sql := range []string{
			fmt.Sprintf(`CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN PERFORM pg_advisory_xact_lock(%d); RETURN NULL; END $$`, fn, lockKey),
			fmt.Sprintf("GRANT USAGE ON SCHEMA %s TO PUBLIC", pgx.Identifier{tn.Schema}.Sanitize()),
			fmt.Sprintf(`CREATE CONSTRAINT TRIGGER wait_at_commit AFTER INSERT ON %s
				DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION %s()`, table, fn),
		} {
			if _, err := db.Pool().Exec(ctx, sql); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() { _, _ = db.Pool().Exec(ctx, "DROP TRIGGER wait_at_commit ON "+table) })
	}
	count := func(sql, id string) int {
		t.Helper()
		var n int
		if err := db.Pool().QueryRow(ctx, sql, id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	inTenant := "SELECT count(*) FROM " + pgx.Identifier{tn.Schema, "audit_log"}.Sanitize() + " WHERE request_id = $1"
	record := func(id string) *store.AuditRecord {
		return &store.AuditRecord{RequestID: id, Decision: store.Allowed, Tool: "resources/read", Subject: "s", Count: 1}
	}
	for _, c := range []struct {
		name  string
		run   func(ctx context.Context, id string) error
		count string
	}{
		{"WithTenant", func(ctx context.Context, id string) error {
			return db.WithTenant(ctx, tn, func(tx pgx.Tx) error { return store.InsertAudit(ctx, tx, record(id)) })
		}, inTenant},
		{"WithTenantControl", func(ctx context.Context, id string) error {
			return db.WithTenantControl(ctx, tn, func(tx pgx.Tx) error { return store.InsertAudit(ctx, tx, record(id)) })
		}, inTenant},
		{"RecordOperatorAction", func(ctx context.Context, id string) error {
			return db.RecordOperatorAction(ctx, tn, store.OperatorAction{Operator: "op", Action: "suspend", Detail: id, Via: "cli"})
		}, "SELECT count(*) FROM gatehouse.operator_audit WHERE detail = $1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			holder, err := db.Pool().Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = holder.Rollback(ctx) }()
			if _, err := holder.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey); err != nil {
				t.Fatal(err)
			}
			id := "commit-cancel-" + c.name
			cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			err = c.run(cctx, id)
			cancel()
			if err := holder.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			time.Sleep(500 * time.Millisecond) // a COMMIT still running in PostgreSQL has finished by now
			n := count(c.count, id)
			switch {
			case err == nil && n != 1:
				t.Errorf("succeeded, but %d records", n)
			case err != nil && n != 0:
				t.Errorf("failed (%v), but the record committed", err)
			case err != nil && !errors.Is(err, context.DeadlineExceeded):
				t.Errorf("stopped by its deadline: %v, want an error matching context.DeadlineExceeded", err)
			}
			// And without the lock held, it commits.
			if err := c.run(ctx, id+"-free"); err != nil || count(c.count, id+"-free") != 1 {
				t.Errorf("without the lock: %v, %d records", err, count(c.count, id+"-free"))
			}
		})
	}
}
