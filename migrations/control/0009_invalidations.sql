-- Cache invalidations, for replicas that reach PostgreSQL through a
-- transaction-pooling PgBouncer, where LISTEN cannot work (the server
-- connection changes hands after every transaction): they poll this table
-- instead. Every invalidation is written here as well as NOTIFYed, in the
-- same transaction as the change. Rows are signed like notifications and
-- kept for a minute. UNLOGGED: after a crash, replicas drop their caches
-- anyway.
CREATE UNLOGGED TABLE gatehouse.invalidations (
    id      bigserial PRIMARY KEY,
    payload text NOT NULL,
    at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX invalidations_at ON gatehouse.invalidations (at);
