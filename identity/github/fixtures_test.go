package github_test

import (
	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
)

// The OAuth app Gatehouse is configured with (the client id is the one in
// GitHub's documented examples).
const (
	clientID     = "Iv1.8a61f9b3a7aba766"
	clientSecret = "c0ffee5ecret0123456789abcdef0123456789ab"
)

// Endpoints of the fake, for counting calls and forcing answers.
const (
	epCheck  = "check a token"
	epUser   = "get the authenticated user"
	epEmails = "list emails"
)

// endpoint returns the fake's endpoint named ep.
func endpoint(f *idptest.GitHub, ep string) *idptest.Endpoint {
	switch ep {
	case epCheck:
		return f.CheckToken
	case epUser:
		return f.User
	case epEmails:
		return f.Emails
	}
	panic("unknown endpoint " + ep)
}

// total is the number of calls the fake received.
func total(f *idptest.GitHub) int {
	return f.CheckToken.Calls() + f.User.Calls() + f.Emails.Calls()
}

// octocatWith is the account of GitHub's documented examples, with emails.
func octocatWith(emails []idptest.GitHubEmail) idptest.GitHubUser {
	return idptest.GitHubUser{ID: 583231, Login: "octocat", Name: "The Octocat", PublicEmail: "octocat-public@example.com", Emails: emails}
}

// GET /user/emails answers. The documented example is emailsOnlyPrimary;
// emailsMixed adds the entries a careless reader would pick: an unverified
// primary-looking address and a verified secondary one.
var (
	emailsOnlyPrimary = []idptest.GitHubEmail{
		{Email: "octocat@github.com", Verified: true, Primary: true, Visibility: "public"},
	}
	emailsMixed = []idptest.GitHubEmail{
		{Email: "octocat@example.org", Verified: false, Primary: true, Visibility: "private"},
		{Email: "octo@work.example.com", Verified: true, Primary: false},
		{Email: "Octocat@GitHub.com", Verified: true, Primary: true, Visibility: "public"},
	}
	emailsNoVerifiedPrimary = []idptest.GitHubEmail{
		{Email: "octocat@example.org", Verified: false, Primary: true, Visibility: "private"},
		{Email: "octo@work.example.com", Verified: true, Primary: false},
	}
)

// Answers GitHub does not document but a proxy or a failing GitHub may send.
var (
	badGateway   = idptest.Response{Status: 502, Body: "<html><body><h1>502 Bad Gateway</h1></body></html>"}
	garbled200   = idptest.Response{Status: 200, Body: `{"id": 1, "app": {"client_id": `}
	forbiddenRaw = idptest.Response{Status: 403, Body: `{
  "message": "Forbidden",
  "documentation_url": "https://docs.github.com/rest",
  "status": "403"
}`}
)
