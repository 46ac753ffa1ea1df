-- The anomaly detector writes ALERT records into the audit chain (as the
-- owner; the tenant role's grants are unchanged). Widening the CHECK is
-- additive: the previous release never writes ALERT, and NOT VALID skips
-- re-reading the existing rows (all of which satisfy the narrower check).
ALTER TABLE audit_log DROP CONSTRAINT IF EXISTS audit_log_decision_check;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_decision_check
    CHECK (decision IN ('ALLOWED', 'DENIED', 'RATE_LIMITED', 'ERROR', 'ALERT')) NOT VALID;
