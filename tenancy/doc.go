// Package tenancy owns who belongs where: the [Tenant] (an organisation keyed
// by its verified email domain, or one person), the member [Role]s, and the
// [Service] that maps an authenticated principal to its tenant and role.
//
// Tenant keys are the human names ("acme.com", "dev"); they never appear in
// database object names. Each tenant gets an opaque Postgres schema and role
// (see store), recorded on the [Tenant].
//
// tenancy depends on identity (it reads principals) and on small interfaces it
// defines itself ([Store]); it must not import store, mcp or the MCP SDK.
package tenancy
