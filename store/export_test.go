package store

// SetChainViaSearchPath switches how ChainAuditTenants names the tenants'
// audit logs (for BenchmarkChainAuditTenants).
func SetChainViaSearchPath(db *DB, on bool) { db.chainViaSearchPath = on }
