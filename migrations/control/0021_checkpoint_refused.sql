-- How many of the tenant's records its audit log refused, kept out of the
-- chain in gatehouse.audit_intake, at the last verification: the console's
-- audit page says the chain is incomplete while there are any, as
-- `gatehouse audit verify` does (exit 1). The previous release never names
-- the column; its checkpoints read 0.
ALTER TABLE gatehouse.audit_checkpoints ADD COLUMN refused integer NOT NULL DEFAULT 0;
