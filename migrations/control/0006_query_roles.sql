-- A second opaque role per tenant, for the query tool: it logs in (with a
-- password only Gatehouse can derive), may SELECT the tenant's workspace
-- tables and nothing else (not even the audit log), and is a member of no
-- role, so a query session has no role to escape to.
--
-- Both roles are optional: where the database account cannot create roles
-- (some managed plans), tenants are isolated by schema alone and the query
-- tool is off.
ALTER TABLE gatehouse.tenants
    ALTER COLUMN role_name DROP NOT NULL,
    ADD COLUMN query_role text UNIQUE;
