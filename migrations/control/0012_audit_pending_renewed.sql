-- audit_pending marks are no longer written by every tenant transaction
-- (measured: that cost about 40% of a small transaction's throughput) but
-- by each process before a tenant's transactions, renewed at most once a
-- minute; the chainer removes a mark only when nothing is left unchained
-- and marked_at is older than 10 minutes, which no tenant transaction
-- outlives (store/audit_pending.go). "since" is no longer read.
ALTER TABLE gatehouse.audit_pending ADD COLUMN marked_at timestamptz NOT NULL DEFAULT now();
