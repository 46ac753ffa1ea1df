// Package google is the Gatehouse Google identity provider. It verifies the
// two kinds of bearer credential Google issues to Gatehouse's OAuth client
// and turns them into an [identity.Principal] with subject "google:<sub>":
//
//   - ID tokens (JWTs), verified locally against Google's published keys by
//     the oidc package: iss must be Google ("https://accounts.google.com" or
//     the legacy "accounts.google.com") and aud must be our client id.
//   - Opaque access tokens ("ya29."), checked with Google's tokeninfo
//     endpoint, which must name our client id as aud (and azp), then
//     described by the OpenID Connect userinfo endpoint.
//
// Both carry the Workspace hosted domain ("hd") in Principal.Claims when
// Google asserts one: the tenancy layer trusts an email's domain only when
// hd vouches for it. Every Google endpoint is a Config field, so tests run
// against in-process fakes.
//
// google imports only identity, identity/oidc and the standard library.
package google
