package storetest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// RefuseIntakeRecord leaves in db's audit intake a record of t (request
// requestID, subject subject, an ALLOWED list_todos call) that its audit
// log refused in both its forms, as the chain passes leave one (refused
// set, its id drawn from the log's sequence): verify reports it, and
// `UPDATE gatehouse.audit_intake SET refused = NULL` lets it be moved.
func RefuseIntakeRecord(tb testing.TB, db *store.DB, t *tenancy.Tenant, requestID, subject string) {
	tb.Helper()
	if _, err := db.Pool().Exec(context.Background(), `INSERT INTO gatehouse.audit_intake (tenant_id, id, request_id, decision, tool, subject, email,
		provider, api_key_id, client_ip, user_agent, reason, args_digest, via, count, refused)
		VALUES ($1, nextval($2::regclass), $3, 'ALLOWED', 'list_todos', $4, '', '', '', '', '', '', '', 'mcp', 1, 'no_boom')`,
		t.ID, pgx.Identifier{t.Schema, "audit_log_id_seq"}.Sanitize(), requestID, subject); err != nil {
		tb.Fatal(err)
	}
}
