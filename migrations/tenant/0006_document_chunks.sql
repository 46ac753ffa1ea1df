-- Semantic search (issue 16 §2). Each document carries the state of its
-- embedding; its chunks' vectors live in document_chunks, deleted with it.
-- Additive: the previous release reads and writes documents as before (it
-- does not reset the state when it changes a document; the next release's
-- first change does).
--
-- embed_state: 'pending' (to embed, or to embed again: its title or body
-- changed, or the model setting did: embed_model is not the current one),
-- 'embedded', or 'failed' (embed_error says why). embed_after holds the
-- document back until then: a worker's lease, or the back-off after a
-- failed attempt (embed_attempts of them so far). No CHECK constraint:
-- adding one would read every existing row; Gatehouse is the only writer.
-- The new columns are outside every stored generated column's inputs, so
-- changing them does not recompute the search vector.
ALTER TABLE documents
    ADD COLUMN embed_state    text NOT NULL DEFAULT 'pending',
    ADD COLUMN embed_model    text NOT NULL DEFAULT '',
    ADD COLUMN embed_error    text NOT NULL DEFAULT '',
    ADD COLUMN embed_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN embed_after    timestamptz;

-- One row per chunk of a document: the chunk's place in the body (in
-- characters, for snippets) and its unit-length embedding. Cosine
-- similarity is then the dot product. The primary key also serves the
-- foreign key (document_id first), so the feature adds four relations per
-- tenant: this table, its primary key, its TOAST table and TOAST index.
-- Where the pgvector extension is installed, Gatehouse adds an HNSW index
-- on embedding::vector(dimensions) at start-up (store.EnsureVectorIndex).
CREATE TABLE document_chunks (
    document_id uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    start_at    integer NOT NULL,
    end_at      integer NOT NULL,
    embedding   real[] NOT NULL,
    PRIMARY KEY (document_id, seq)
);

GRANT SELECT, INSERT, DELETE ON document_chunks TO {{tenant_role}};
