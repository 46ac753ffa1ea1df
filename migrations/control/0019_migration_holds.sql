-- A tenant whose schema a call tried to bring up to date (during a rolling
-- deploy) and found locked by another session (a long query, a dump,
-- maintenance) is not tried again, by any replica, before retry_at: each
-- try queues an ACCESS EXCLUSIVE lock request that holds up every
-- statement on the table for the try's lock wait, and with each replica
-- pausing on its own, a few replicas kept a tenant's table held up most of
-- the time its calls came. Rows are removed by the next successful try.
CREATE TABLE gatehouse.migration_holds (
    tenant_id uuid PRIMARY KEY REFERENCES gatehouse.tenants (id) ON DELETE CASCADE,
    retry_at  timestamptz NOT NULL
);
