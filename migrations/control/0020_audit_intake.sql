-- Calls' audit records, as the group commit writes them: one table for
-- every tenant, so that a flush is one INSERT whatever the number of
-- tenants in it (one statement per tenant into each tenant's audit_log
-- cost PostgreSQL about 0.4 ms of CPU per tenant and flush: its locks, its
-- plan, four indexes; bench/README.md). The audit chainer moves each
-- tenant's rows into its audit_log, chained, within seconds
-- (store/audit_intake.go); readers of a tenant's audit log move them first.
--
-- No foreign key to tenants: checking one takes a row lock on the tenant
-- per record. Rows of a deleted tenant are removed with it, and any left
-- by a write racing the deletion stay, unread. The checks repeat
-- audit_log's, so that a row that got in can be moved (see refused).
CREATE TABLE gatehouse.audit_intake (
    tenant_id   uuid NOT NULL,
    -- The record's id in its tenant's audit_log, drawn from that log's
    -- own sequence when the record is written here.
    id          bigint NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    request_id  text NOT NULL,
    decision    text NOT NULL CHECK (decision IN ('ALLOWED', 'DENIED', 'RATE_LIMITED', 'ERROR')),
    tool        text NOT NULL,
    subject     text NOT NULL,
    email       text NOT NULL,
    provider    text NOT NULL,
    api_key_id  text NOT NULL,
    client_ip   text NOT NULL,
    user_agent  text NOT NULL,
    reason      text NOT NULL,
    args_digest text NOT NULL,
    via         text NOT NULL,
    count       integer NOT NULL CHECK (count > 0),
    -- Set when the tenant's audit log refused the record in its full and
    -- its reduced form (a constraint of its own, a log gone): why. Such a
    -- row stays here, is no longer moved, and `gatehouse audit verify`
    -- reports it.
    refused     text,
    PRIMARY KEY (tenant_id, id)
) WITH (
    -- A queue: every row is deleted within seconds of its insert. Vacuumed
    -- after every few thousand dead rows, not after a fifth of the table.
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 5000
);
