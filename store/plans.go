package store

import (
	"context"
)

// Generic plans for the statements whose plan does not depend on their
// arguments.
//
// A prepared statement is planned afresh, for its arguments, at each of
// its first five executions ("custom plans"); only then does PostgreSQL
// compare their cost with a plan made once for any arguments (the
// "generic plan") and keep that one if it is not dearer (PostgreSQL
// documentation, PREPARE, "plan_cache_mode"; plancache.c,
// choose_custom_plan). The tools' statements are prepared per tenant and
// connection (prepared.go), so when calls spread over thousands of
// tenants a statement rarely reaches its sixth execution on a connection,
// and nearly every call plans its statement: 85–110 µs of PostgreSQL's
// CPU per list_todos call over 2,000 of 10,000 tenants, against 0–7 over
// 10 (pg_stat_statements, bench/README.md).
//
// A statement sent with a context from [GenericPlan] is planned
// generically from its first execution as a prepared statement: the
// message (a read's, see [DB.InTenantReadOnly]) or the transaction (a
// write's, [DB.InTenantWrite]) that runs it sets plan_cache_mode to
// force_generic_plan locally (set_config(…, true), undone when that
// transaction ends; PostgreSQL 15 has no per-statement setting), so it is
// planned once per tenant and connection and never again. The mark is
// for statements whose generic plan was shown to be the plan their custom
// plans choose, on a busy tenant and an empty one (bench/tenants -plans,
// bench/README.md): the lists of todos, projects and the audit log, look-
// ups and changes by primary key, inserts. Statements whose best plan
// depends on their arguments keep custom plans: the full-text and
// semantic searches, and documents filtered by tag or project (a tag on
// a few documents is found through its GIN index, one on most of them by
// walking the newest first; the generic plan, blind to the tag, took the
// index every time and 0.7 ms instead of 0.12 on the busy tenant).
//
// The mark changes nothing for a statement that runs unprepared (its
// first use on a connection, behind a transaction pooler, with
// Options.PreparedStatements off): an unnamed statement is planned once
// for its arguments either way. Options.CustomPlans (GATEHOUSE_DB_GENERIC_PLANS=off) ignores the marks.

// genericKey marks a statement as one planned generically (GenericPlan).
type genericKey struct{}

// GenericPlan returns ctx marking the statements sent with it in a tool's
// read or write as planned once, generically, when they run prepared
// (see plans.go): only for a statement whose plan is the same whatever its
// arguments. A read's message runs with the generic plans when every
// statement in it is marked; a write switches back to PostgreSQL's own
// choice before a prepared statement that is not marked.
func GenericPlan(ctx context.Context) context.Context {
	return context.WithValue(ctx, genericKey{}, true)
}

// genericPlanned reports whether ctx marks its statements with
// GenericPlan.
func genericPlanned(ctx context.Context) bool { return ctx.Value(genericKey{}) != nil }

// planGenericSQL, appended to a prelude's SELECT list (readOpenSQL,
// writeOpenSQL), makes the rest of the transaction plan its prepared
// statements generically.
const planGenericSQL = ", set_config('plan_cache_mode', 'force_generic_plan', true)"

// planDefaultSQL gives the rest of a write's transaction the
// plan_cache_mode it had before planGenericSQL (the server's, the
// role's or the database's setting).
const planDefaultSQL = "SET LOCAL plan_cache_mode TO DEFAULT"

// wantsGeneric reports whether a statement sent with ctx, by its
// prepared name if prepared is set, is to be planned generically.
func (db *DB) wantsGeneric(ctx context.Context, prepared bool) bool {
	return prepared && !db.customPlans && genericPlanned(ctx)
}
