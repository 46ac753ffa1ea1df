-- Tenants whose audit logs may hold records not chained yet, so that the
-- chainer's pass after a start asks only them, not every tenant schema.
-- Every tenant transaction marks its tenant (INSERT ... ON CONFLICT DO
-- NOTHING: no write once marked) in the transaction that writes the
-- record, holding a shared advisory lock on the tenant's marker; the
-- chainer removes the mark only under the exclusive lock, when no such
-- transaction is in flight and nothing is left unchained (store/audit.go).
CREATE TABLE gatehouse.audit_pending (
    tenant_id uuid PRIMARY KEY REFERENCES gatehouse.tenants (id) ON DELETE CASCADE,
    since     timestamptz NOT NULL DEFAULT now()
);

-- Records written before this table existed: every tenant with an audit
-- log is checked once, at the next start.
INSERT INTO gatehouse.audit_pending (tenant_id)
    SELECT id FROM gatehouse.tenants WHERE schema_version >= 2;
