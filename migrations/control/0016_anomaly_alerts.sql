-- Anomaly alerts (issue 16 §4; mcp/alerts.go, tenancy/anomaly). The
-- detector reads each tenant's audit chain after the chainer, so it adds
-- nothing to a call's path; what it learns of each principal is kept here,
-- shared by every replica.

-- What is known of one principal of one tenant (tenancy/anomaly.State as
-- JSON). Rows unused for 90 days are dropped.
CREATE TABLE gatehouse.anomaly_principals (
    tenant_id  uuid NOT NULL REFERENCES gatehouse.tenants (id) ON DELETE CASCADE,
    subject    text NOT NULL,
    state      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subject)
);

-- How far the detector has read each tenant's audit chain.
CREATE TABLE gatehouse.anomaly_cursors (
    tenant_id uuid PRIMARY KEY REFERENCES gatehouse.tenants (id) ON DELETE CASCADE,
    chain_seq bigint NOT NULL
);

-- One replica at a time runs the detector's pass: it holds this lease, and
-- keeps here how far it has read the failed authentications naming keys.
CREATE TABLE gatehouse.anomaly_pass (
    id             boolean PRIMARY KEY DEFAULT true CHECK (id),
    holder         text NOT NULL DEFAULT '',
    lease_until    timestamptz NOT NULL DEFAULT '-infinity',
    failures_until timestamptz NOT NULL DEFAULT date_trunc('minute', now())
);
INSERT INTO gatehouse.anomaly_pass DEFAULT VALUES;

-- Failed authentications whose token named an API key id (gk_<id>_...),
-- per minute and id, so that a burst of them reaches that key's tenant.
-- The id is public: these rows say someone tried, never that the key
-- was used.
CREATE TABLE gatehouse.auth_failures_by_key (
    window_start timestamptz NOT NULL,
    api_key_id   text NOT NULL,
    count        bigint NOT NULL,
    first_at     timestamptz NOT NULL,
    last_at      timestamptz NOT NULL,
    PRIMARY KEY (window_start, api_key_id)
);

-- The alerts, for admins (list_alerts, the console): each is also an
-- ALERT record in the tenant's audit chain (audit_id), whose args_digest
-- is the keyed digest of the evidence kept here.
CREATE TABLE gatehouse.alerts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES gatehouse.tenants (id) ON DELETE CASCADE,
    audit_id        bigint NOT NULL,
    at              timestamptz NOT NULL,
    kind            text NOT NULL,
    subject         text NOT NULL,
    api_key_id      text NOT NULL DEFAULT '',
    client_ip       text NOT NULL DEFAULT '',
    summary         text NOT NULL,
    evidence        jsonb NOT NULL,
    suspended       boolean NOT NULL DEFAULT false,
    acknowledged_at timestamptz,
    acknowledged_by text NOT NULL DEFAULT ''
);
CREATE INDEX alerts_by_tenant ON gatehouse.alerts (tenant_id, id DESC);
