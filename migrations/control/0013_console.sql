-- The web console (console/). Sessions live here so any replica serves any
-- page; the cookie carries a random id, stored only as its SHA-256.
CREATE TABLE gatehouse.console_sessions (
    id_hash      bytea PRIMARY KEY CHECK (length(id_hash) = 32),
    subject      text NOT NULL,                 -- provider-qualified: google:1234
    identity     jsonb NOT NULL,                -- who signed in (authserver.Identity)
    tenant_key   text NOT NULL,                 -- where they were placed at sign-in
    csrf_key     bytea NOT NULL,                -- keys the session's form tokens
    signed_in_at timestamptz NOT NULL DEFAULT now(), -- last upstream sign-in (fresh sign-in for sensitive actions)
    last_seen_at timestamptz NOT NULL DEFAULT now(), -- idle timeout
    expires_at   timestamptz NOT NULL,          -- absolute timeout
    user_agent   text NOT NULL DEFAULT '',
    client_ip    text NOT NULL DEFAULT ''
);
CREATE INDEX console_sessions_subject ON gatehouse.console_sessions (subject);
CREATE INDEX console_sessions_expiry ON gatehouse.console_sessions (expires_at);

-- The last verification of each tenant's audit chain: the console shows
-- it instead of re-hashing the chain on every page load.
CREATE TABLE gatehouse.audit_checkpoints (
    tenant_id    uuid PRIMARY KEY REFERENCES gatehouse.tenants (id) ON DELETE CASCADE,
    verified     bigint NOT NULL,      -- chained records whose links checked out
    broken_seq   bigint,               -- first bad record's chain position, when broken
    problem      text NOT NULL DEFAULT '',
    checked_at   timestamptz NOT NULL DEFAULT now()
);

-- What operators did to tenants (suspend, resume, limits, export, delete):
-- kept here, outside any tenant schema, so it outlives a deleted tenant.
CREATE TABLE gatehouse.operator_audit (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    operator   text NOT NULL,         -- provider-qualified subject, or cli:<os user>
    action     text NOT NULL,
    tenant_id  uuid NOT NULL,         -- no foreign key: the tenant may be gone
    tenant_key text NOT NULL,
    detail     text NOT NULL DEFAULT '',
    client_ip  text NOT NULL DEFAULT '',
    via        text NOT NULL          -- console or cli
);
CREATE INDEX operator_audit_tenant ON gatehouse.operator_audit (tenant_key, at);

-- Tool calls per tenant and hour, so the operator's tenant list shows the
-- last 24 hours without reading every tenant's schema. Added to once per
-- audit flush (not per call); UNLOGGED: a count lost in a crash is not
-- worth a WAL write per flush.
CREATE UNLOGGED TABLE gatehouse.tenant_calls (
    tenant_id uuid NOT NULL,
    hour      timestamptz NOT NULL,
    calls     bigint NOT NULL,
    PRIMARY KEY (tenant_id, hour)
);
