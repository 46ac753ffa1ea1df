-- Semantic search (issue 16 §2): the tenants whose admin turned it on, so
-- that their documents' text is sent to the configured embeddings
-- provider. A row means on; no row (the default) means off. Who turned it
-- on or off is in the tenant's audit log (set_semantic_search).
CREATE TABLE gatehouse.semantic_search (
    tenant_id  uuid PRIMARY KEY REFERENCES gatehouse.tenants (id) ON DELETE CASCADE,
    enabled_by text NOT NULL,
    enabled_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
