-- The workspace grows projects and documents, and todos gain a project, a
-- due date and a priority. Additive only: the previous release keeps
-- reading and writing todos as before (every new column has a default or
-- is nullable).

CREATE TABLE projects (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 10000),
    archived    boolean NOT NULL DEFAULT false,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Names are unique among active projects, ignoring case; an archived
-- project frees its name. The index also serves listing by name.
CREATE UNIQUE INDEX projects_name_active ON projects (lower(name)) WHERE NOT archived;
CREATE INDEX projects_by_name ON projects (lower(name), id);

-- Projects are archived, never deleted.
GRANT SELECT, INSERT, UPDATE ON projects TO {{tenant_role}};

-- now() as the added column's default is evaluated once (no table rewrite);
-- new rows then get the time of their own insert, and existing rows the
-- time they last changed.
ALTER TABLE todos
    ADD COLUMN project_id uuid REFERENCES projects (id),
    ADD COLUMN due_on     date,
    ADD COLUMN priority   text NOT NULL DEFAULT 'normal' CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE todos ALTER COLUMN updated_at SET DEFAULT clock_timestamp();
UPDATE todos SET updated_at = coalesce(completed_at, created_at);
CREATE INDEX todos_by_project ON todos (project_id, created_at DESC, id DESC) WHERE project_id IS NOT NULL;
CREATE INDEX todos_by_due ON todos (due_on) WHERE due_on IS NOT NULL;

-- Documents are searched with PostgreSQL full-text search (english): the
-- title weighs most (A), then the tags (B), then the body (C). Only the
-- first 262144 characters of the body are indexed, which keeps the
-- tsvector under its 1 MB limit whatever the text; all of it is stored.
--
-- array_to_string is only STABLE (it could call any element type's output
-- function); for text[] it is immutable, which a generated column needs.
--
-- The two functions are named after the tenant (suffixed with the hex of
-- its schema name). PostgreSQL finds a function by name by listing every
-- function of that name in every schema (FuncnameGetCandidates), so with
-- one name in 10,000 schemas each GRANT, REVOKE or CREATE TABLE naming it
-- read 10,000 pg_proc rows: provisioning took 2× as long at 10,000 tenants
-- (issue 17). Tenants provisioned before this change keep the plain names
-- document_tags_text and document_tags_valid: no later migration may name
-- these functions (the table's CHECK and generated column refer to them by
-- their oid, whatever they are called).
CREATE FUNCTION document_tags_text_{{tenant_tag}}(tags text[]) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT array_to_string(tags, ' ') $$;

-- At most 20 tags of 1 to 50 characters, none NULL.
CREATE FUNCTION document_tags_valid_{{tenant_tag}}(tags text[]) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT cardinality(tags) <= 20 AND NOT EXISTS (
        SELECT FROM unnest(tags) t WHERE t IS NULL OR length(t) NOT BETWEEN 1 AND 50) $$;

REVOKE ALL ON FUNCTION document_tags_text_{{tenant_tag}}(text[]), document_tags_valid_{{tenant_tag}}(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION document_tags_text_{{tenant_tag}}(text[]), document_tags_valid_{{tenant_tag}}(text[]) TO {{tenant_role}};

CREATE TABLE documents (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    title      text NOT NULL CHECK (length(title) BETWEEN 1 AND 300),
    body       text NOT NULL DEFAULT '' CHECK (octet_length(body) <= 1048576),
    tags       text[] NOT NULL DEFAULT '{}' CHECK (document_tags_valid_{{tenant_tag}}(tags)),
    project_id uuid REFERENCES projects (id),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    search     tsvector NOT NULL GENERATED ALWAYS AS (
        setweight(to_tsvector('english'::regconfig, title), 'A') ||
        setweight(to_tsvector('english'::regconfig, document_tags_text_{{tenant_tag}}(tags)), 'B') ||
        setweight(to_tsvector('english'::regconfig, left(body, 262144)), 'C')
    ) STORED
);
CREATE INDEX documents_search ON documents USING gin (search);
CREATE INDEX documents_by_created ON documents (created_at DESC, id DESC);
CREATE INDEX documents_by_tag ON documents USING gin (tags);
CREATE INDEX documents_by_project ON documents (project_id) WHERE project_id IS NOT NULL;

GRANT SELECT, INSERT, UPDATE, DELETE ON documents TO {{tenant_role}};
