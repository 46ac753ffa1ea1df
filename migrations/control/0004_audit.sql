-- The head of each tenant's audit chain, kept where the tenant role cannot
-- reach: cutting records off the end of a chain leaves a valid shorter
-- chain, which only a head recorded elsewhere reveals.
CREATE TABLE gatehouse.audit_heads (
    tenant_id  uuid PRIMARY KEY REFERENCES gatehouse.tenants (id) ON DELETE CASCADE,
    chain_seq  bigint NOT NULL,
    hash       bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Events with no tenant (credentials that failed), aggregated per minute,
-- client address and reason, so a flood of bad tokens adds a row a minute
-- per source, not a row per request.
CREATE TABLE gatehouse.auth_failures (
    window_start timestamptz NOT NULL,
    client_ip    text NOT NULL,
    reason       text NOT NULL,
    count        bigint NOT NULL,
    first_at     timestamptz NOT NULL,
    last_at      timestamptz NOT NULL,
    user_agent   text NOT NULL DEFAULT '',
    PRIMARY KEY (window_start, client_ip, reason)
);
