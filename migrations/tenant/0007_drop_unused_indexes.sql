-- Two indexes that did not earn their keep (issue 17: every relation of
-- every tenant costs catalog space, pg_dump locks and backend cache
-- memory). Under the tools' reads and writes on a busy tenant (3,000
-- todos, 600 documents, 30 projects, 5,000 audit records; bench/tenants
-- -index-rounds 100) neither was ever scanned:
--   projects_by_name: a tenant's projects are few, and the unique index
--     projects_name_active already orders the active ones by name;
--   todos_by_due: the due-date filter is answered by walking
--     todos_by_created (the list's own order) and filtering.
-- 29 relations per tenant become 27. Dropping an index is safe for the
-- previous release during a rolling deploy (no statement names them).
DROP INDEX IF EXISTS projects_by_name;
DROP INDEX IF EXISTS todos_by_due;
