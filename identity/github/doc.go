// Package github is the Gatehouse GitHub identity provider: it turns a
// GitHub user access token, issued to Gatehouse's own OAuth app (gho_) or
// GitHub App (ghu_), into an [identity.Principal].
//
// A token is accepted only after GitHub's "Check a token" endpoint, called
// with the app's client credentials, confirms it was issued to this app:
// tokens of other apps and personal access tokens are rejected. The subject
// is the user's numeric id ("github:583231"), never the login, which can be
// renamed and reused; the email is set only when GitHub reports it as both
// primary and verified.
//
// github imports only identity and the standard library.
package github
