// Package authserver makes Gatehouse the OAuth 2.1 authorization server
// that MCP clients (Claude, VS Code, Cursor, MCP Inspector) talk to, while
// people prove who they are at Google, GitHub, Auth0 or an OIDC issuer,
// none of which speaks MCP's client registration.
//
// The flow, all of its state in the database (any replica serves any step;
// a restart loses nothing):
//
//  1. metadata: RFC 9728 (served by mcp) names this issuer; RFC 8414 metadata
//     here advertises code + PKCE S256 only, DCR, Client ID Metadata
//     Documents, and iss in authorization responses (RFC 9207);
//  2. the client registers (RFC 7591) or identifies itself by an https
//     client_id whose metadata document is fetched with SSRF protection;
//  3. /authorize checks the client, its exact redirect URI, PKCE S256 and
//     the resource (RFC 8707), binds the request to the browser with a
//     cookie, and shows the sign-in page;
//  4. the person signs in upstream (x/oauth2, PKCE); the callback learns who
//     they are through the same verifiers as direct tokens and places them
//     with the same tenancy rules; upstream tokens are used once and dropped;
//  5. consent (per person and client, CSRF-safe) yields a single-use code;
//  6. /token exchanges it (PKCE, client, redirect URI and resource must all
//     match) for a short-lived ES256 access token whose aud is the MCP
//     resource, and an opaque refresh token, rotated on every use; reusing a
//     rotated one revokes its whole family.
//
// Access tokens carry the upstream identity (subject, provider, verified
// email, Google hd) and the tenant the person consented in, never a role:
// each request places the person again, so removing or demoting a member
// takes effect at once, and a token whose holder is now placed in another
// tenant is refused (mcp checks [TenantClaim]). Signing keys live in the
// database, encrypted with secrets from the environment, and rotate with
// overlap (see keys.go). Without upstreams the server signs in nobody but
// still verifies developer tokens (gatehouse token mint).
//
// authserver imports identity (and its verifiers, through Upstream values
// its caller builds), go-jose and x/oauth2. Persistence is behind [Store];
// placing people in tenants behind [Placer]; it imports neither store nor
// tenancy nor mcp.
package authserver
