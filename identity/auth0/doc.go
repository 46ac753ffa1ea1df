// Package auth0 is the Gatehouse Auth0 identity provider: it verifies the
// access tokens an Auth0 tenant issues for Gatehouse's API (RS256 JWTs
// whose aud names the API's identifier) and turns them into an
// [identity.Principal] with subject "auth0:<sub>" ("auth0:google-oauth2|1234").
//
// Signatures, iss (Auth0 issuers end with "/"), aud and exp are checked by
// the oidc package; only RS256 is accepted. Access tokens rarely carry an
// email: a configured (namespaced) claim is used when present, otherwise
// Auth0's /userinfo is asked, with the result cached per subject because
// Auth0 rate-limits that endpoint.
//
// auth0 imports only identity, identity/oidc, golang.org/x/sync/singleflight
// and the standard library.
package auth0
