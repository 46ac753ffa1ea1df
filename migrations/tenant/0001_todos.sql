CREATE TABLE todos (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    title        text NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    notes        text NOT NULL DEFAULT '' CHECK (length(notes) <= 10000),
    done         boolean NOT NULL DEFAULT false,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at timestamptz
);
CREATE INDEX todos_by_created ON todos (created_at DESC, id DESC);

GRANT SELECT, INSERT, UPDATE, DELETE ON todos TO {{tenant_role}};
