// Package identity turns a bearer credential into a [Principal]: who is
// calling, as vouched for by an identity provider or by a Gatehouse API key.
//
// The [Resolver] routes each credential by its shape to exactly one
// [Verifier] (never "try every provider in turn", which would hand one
// provider's tokens to another) and caches the outcome: entries are keyed by
// SHA-256 of the credential, live no longer than the credential itself,
// are never extended on a hit, and concurrent misses for one credential
// cause one verification. Entries of a [Rechecker] (API keys) that are in
// use are confirmed again in bulk, off the requests' path, and cached anew
// for the TTL from then; a [Resolver.Forget] (a revocation) is never undone
// by a verification or recheck that read the credential before it.
//
// A principal may carry the source networks its credential may be used
// from ([Networks], parsed and normalised by [ParseNetworks]); the HTTP
// layer checks them on every request, cached principals included.
//
// Provider sub-packages (apikey, and later google, github, auth0, oidc)
// implement [Verifier]; they import identity and their protocol libraries
// only. identity itself must not import tenancy, store, mcp or the MCP SDK:
// it knows nothing about tenants beyond the hints a credential carries.
package identity
