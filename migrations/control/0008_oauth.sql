-- Gatehouse as an OAuth 2.1 authorization server for MCP clients. Every
-- piece of flow state lives here, so any replica can serve any step and a
-- restart loses no sign-in in progress. Secrets (codes, refresh tokens,
-- client secrets) are stored as SHA-256 hashes only.

-- Clients registered dynamically (RFC 7591). Clients identified by a Client
-- ID Metadata Document (an https client_id) are cached here too (cimd).
CREATE TABLE gatehouse.oauth_clients (
    id                 text PRIMARY KEY,
    kind               text NOT NULL CHECK (kind IN ('dcr', 'cimd')),
    name               text NOT NULL DEFAULT '',
    redirect_uris      text[] NOT NULL,
    secret_hash        bytea,            -- confidential DCR clients only
    client_uri         text NOT NULL DEFAULT '',
    metadata           jsonb NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL DEFAULT now(),
    last_used_at       timestamptz NOT NULL DEFAULT now(),
    fetched_until      timestamptz       -- cimd: when the document must be fetched again
);

-- An authorization in progress: from /authorize to the code.
CREATE TABLE gatehouse.oauth_requests (
    id              text PRIMARY KEY,
    client_id       text NOT NULL,
    redirect_uri    text NOT NULL,
    state           text NOT NULL DEFAULT '',
    scope           text NOT NULL,
    resource        text NOT NULL,
    code_challenge  text NOT NULL,
    browser_hash    bytea NOT NULL,   -- binds the request to the browser's cookie
    upstream        text NOT NULL DEFAULT '',     -- provider chosen
    upstream_state  text UNIQUE,                  -- state sent upstream
    upstream_verifier text NOT NULL DEFAULT '',   -- PKCE verifier for upstream
    identity        jsonb,                        -- who signed in, once known
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX oauth_requests_expiry ON gatehouse.oauth_requests (expires_at);

-- Consent given by a person to a client for scopes.
CREATE TABLE gatehouse.oauth_consents (
    subject    text NOT NULL,
    client_id  text NOT NULL,
    scope      text NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, client_id)
);

-- Authorization codes: single use, short-lived, bound to client, redirect
-- URI, PKCE challenge and resource.
CREATE TABLE gatehouse.oauth_codes (
    hash           bytea PRIMARY KEY,
    client_id      text NOT NULL,
    redirect_uri   text NOT NULL,
    code_challenge text NOT NULL,
    resource       text NOT NULL,
    scope          text NOT NULL,
    identity       jsonb NOT NULL,
    family         text NOT NULL,     -- refresh family started by this code
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz
);

-- Refresh tokens: rotated on every use; reusing a rotated one revokes the
-- whole family.
CREATE TABLE gatehouse.oauth_refresh_tokens (
    hash        bytea PRIMARY KEY,
    family      text NOT NULL,
    client_id   text NOT NULL,
    resource    text NOT NULL,
    scope       text NOT NULL,
    identity    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX oauth_refresh_family ON gatehouse.oauth_refresh_tokens (family);

-- Signing keys of the access tokens Gatehouse issues. Private keys are
-- encrypted (AES-256-GCM) with a key from the environment. A key is
-- published from created_at, signs from activate_at to retire_at, and is
-- published until expire_at (after the last token it signed has expired).
CREATE TABLE gatehouse.signing_keys (
    kid         text PRIMARY KEY,
    alg         text NOT NULL,
    public_jwk  jsonb NOT NULL,
    private_enc bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    activate_at timestamptz NOT NULL,
    retire_at   timestamptz NOT NULL,
    expire_at   timestamptz NOT NULL
);
