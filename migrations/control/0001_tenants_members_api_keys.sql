-- Tenants: one per organisation (verified email domain) or person.
-- schema_name and role_name are opaque (t_<random hex>, gatehouse_t_<random hex>):
-- pg_namespace and pg_roles are readable by every database user, so they must
-- not reveal which customers exist.
CREATE TABLE gatehouse.tenants (
    id             uuid PRIMARY KEY,
    key            text NOT NULL UNIQUE CHECK (key <> '' AND key = lower(key)),
    kind           text NOT NULL CHECK (kind IN ('organization', 'personal')),
    schema_name    text NOT NULL UNIQUE,
    role_name      text NOT NULL UNIQUE,
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    schema_version integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Members: a principal's role in a tenant.
CREATE TABLE gatehouse.members (
    tenant_id  uuid NOT NULL REFERENCES gatehouse.tenants (id) ON DELETE CASCADE,
    subject    text NOT NULL,
    email      text NOT NULL DEFAULT '',
    role       text NOT NULL CHECK (role IN ('admin', 'developer', 'viewer')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subject)
);

-- API keys: only the SHA-256 of the secret is stored.
CREATE TABLE gatehouse.api_keys (
    id           text PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES gatehouse.tenants (id) ON DELETE CASCADE,
    secret_hash  bytea NOT NULL CHECK (length(secret_hash) = 32),
    name         text NOT NULL DEFAULT '',
    role         text NOT NULL CHECK (role IN ('admin', 'developer', 'viewer')),
    scopes       text[] NOT NULL,
    created_by   text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_tenant ON gatehouse.api_keys (tenant_id, created_at);

-- Instance-wide facts (for example when the bootstrap key was issued).
CREATE TABLE gatehouse.settings (
    name       text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
