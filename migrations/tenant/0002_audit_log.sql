-- The tenant's audit log: one record per decision about a tool call.
-- Records are written by the tool call's own transaction (as the tenant
-- role, which may only insert the event columns and read), then chained by
-- Gatehouse (as the owner): chain_seq orders the chain, and
-- hash = HMAC-SHA256(key, prev_hash || the record's fields), so an edited,
-- deleted, inserted or reordered record breaks it.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    request_id  text NOT NULL DEFAULT '',
    decision    text NOT NULL CHECK (decision IN ('ALLOWED', 'DENIED', 'RATE_LIMITED', 'ERROR')),
    tool        text NOT NULL DEFAULT '',
    subject     text NOT NULL,
    email       text NOT NULL DEFAULT '',
    provider    text NOT NULL DEFAULT '',
    api_key_id  text NOT NULL DEFAULT '',
    client_ip   text NOT NULL DEFAULT '',
    user_agent  text NOT NULL DEFAULT '',
    reason      text NOT NULL DEFAULT '',
    args_digest text NOT NULL DEFAULT '',
    count       integer NOT NULL DEFAULT 1 CHECK (count > 0), -- > 1: aggregated (rate-limited floods)
    chain_seq   bigint UNIQUE,
    key_id      text,
    prev_hash   bytea,
    hash        bytea
);
CREATE INDEX audit_log_unchained ON audit_log (id) WHERE chain_seq IS NULL;
CREATE INDEX audit_log_at ON audit_log (at DESC, id DESC);

GRANT SELECT ON audit_log TO {{tenant_role}};
GRANT INSERT (request_id, decision, tool, subject, email, provider, api_key_id, client_ip, user_agent, reason, args_digest, count)
    ON audit_log TO {{tenant_role}};
