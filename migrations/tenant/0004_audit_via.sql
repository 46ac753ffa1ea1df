-- Which surface of Gatehouse a call came through: '' for MCP (tools/call),
-- 'console' for the web console, which runs the same tools. Additive: the
-- previous release never writes it, and a record without it chains and
-- verifies exactly as before (the chain hashes it only when set).
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS via text NOT NULL DEFAULT '';
GRANT INSERT (via) ON audit_log TO {{tenant_role}};
