-- Members are people; identities are the provider subjects they sign in
-- with. The same person arriving through Google and GitHub with the same
-- verified email is one member with two identities.
--
-- The members table of 0001 was never written by any release (API keys do
-- not create members), so it is replaced rather than altered: the one
-- exception to the additive-only rule, safe because the table is empty.
DROP TABLE gatehouse.members;

CREATE TABLE gatehouse.members (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES gatehouse.tenants (id) ON DELETE CASCADE,
    email      text NOT NULL DEFAULT '' CHECK (email = lower(email)), -- verified only; '' when none
    name       text NOT NULL DEFAULT '',
    role       text NOT NULL CHECK (role IN ('admin', 'developer', 'viewer')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX members_tenant_email ON gatehouse.members (tenant_id, email) WHERE email <> '';
CREATE INDEX members_tenant ON gatehouse.members (tenant_id, created_at);

CREATE TABLE gatehouse.member_identities (
    tenant_id    uuid NOT NULL REFERENCES gatehouse.tenants (id) ON DELETE CASCADE,
    subject      text NOT NULL,
    member_id    uuid NOT NULL REFERENCES gatehouse.members (id) ON DELETE CASCADE,
    provider     text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subject)
);
CREATE INDEX member_identities_member ON gatehouse.member_identities (member_id);
