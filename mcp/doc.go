// Package mcp assembles Gatehouse's MCP server: the HTTP surface (echo), the
// official go-sdk server in stateless Streamable HTTP mode, the tool
// registry, the request pipeline and the tool handlers.
//
// # The request pipeline
//
// Every request to /mcp passes, in order:
//
//  1. authenticate: the bearer credential resolves to an identity.Principal
//     (401 with WWW-Authenticate otherwise; 503 when an upstream is down);
//  2. resolve tenant: tenancy places the principal in a tenant with a role
//     (403 otherwise);
//  3. per tool call: authorize the tool for the caller's role and the
//     credential's scopes, validate the arguments against the tool's schema,
//     and execute the handler inside store.DB.InTenant (a tool with its own
//     connection, query, runs outside it: a call never holds two).
//
// Between 2 and 3, over HTTP: the credential's allowed networks (403,
// -32032, networks.go: before the rate limits, so that a refused request
// costs the key nothing), the rate limits (429, -32029), then admission
// (admission.go): a call doing database work (tools/call, resources/read,
// prompts/get, completion/complete) takes a slot among the calls in
// flight — bounded in all by the tenant-work pool's size, per tenant and
// per principal — waiting briefly,
// fairly across tenants, or is refused (429, -32031). A credential refused
// for its rate limit is remembered until its retry time and refused before
// all of this (refuse_fast.go). A database or identity provider that cannot
// be reached turns the answer into 503 with Retry-After (-32030,
// unavailable.go), never a tool result.
//
// Steps 1–2 are HTTP middleware; the caller they establish reaches tool
// handlers through the SDK's auth.TokenInfo (Extra["caller"]). Step 3 is the
// wrapper every registered [Tool] gets from the registry: a tool cannot
// opt out, because tools are only ever added to the SDK server through it.
//
// Tools are registered with the SDK's raw Server.AddTool: the SDK's typed
// AddTool would validate arguments before our authorization runs and answer
// invalid input with a protocol error the model cannot read. Arguments are
// validated against a schema resolved once at start-up, property names
// matched exactly (encoding/json alone folds case), and bad input becomes a
// tool error result that says what is wrong.
//
// Prompts (prompts.go) pass the same step 3: each has a minimum role and
// scope like a tool, prompts/list shows a caller only those it may get, and
// prompts/get and completion/complete read the caller's tenant read-only,
// as read tools do, and are audited like a read.
//
// Errors are translated to HTTP statuses, JSON-RPC errors and tool results in
// one place (errors.go).
//
// # Anomaly alerts
//
// alerts.go runs the anomaly detector (model: tenancy/anomaly) off the
// request path: one replica at a time reads the chained audit records of
// the tenants whose chain grew, in batches, and writes ALERT records, the
// admins' alert list and each principal's learned state; a call costs the
// database nothing more. Its cost per record and the choice behind it are
// in alerts.go's comment and docs/alerts.md.
//
// This package imports identity, tenancy and store; none of them imports it.
// The SDK is imported as sdk.
package mcp
