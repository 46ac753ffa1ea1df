package idptest

// GitHub's documented REST answers (API version 2022-11-28), with the
// values of a test substituted into the documented examples.

import (
	"encoding/json"
	"strings"
	"text/template"
)

var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"last8": func(s string) string { return s[max(0, len(s)-8):] },
}).Parse(`
{{define "simple-user"}}{
    "login": {{json .Login}},
    "id": {{.ID}},
    "node_id": "MDQ6VXNlcjE=",
    "avatar_url": "https://github.com/images/error/octocat_happy.gif",
    "gravatar_id": "",
    "url": "https://api.github.com/users/{{.Login}}",
    "html_url": "https://github.com/{{.Login}}",
    "followers_url": "https://api.github.com/users/{{.Login}}/followers",
    "following_url": "https://api.github.com/users/{{.Login}}/following{/other_user}",
    "gists_url": "https://api.github.com/users/{{.Login}}/gists{/gist_id}",
    "starred_url": "https://api.github.com/users/{{.Login}}/starred{/owner}{/repo}",
    "subscriptions_url": "https://api.github.com/users/{{.Login}}/subscriptions",
    "organizations_url": "https://api.github.com/users/{{.Login}}/orgs",
    "repos_url": "https://api.github.com/users/{{.Login}}/repos",
    "events_url": "https://api.github.com/users/{{.Login}}/events{/privacy}",
    "received_events_url": "https://api.github.com/users/{{.Login}}/received_events",
    "type": "User",
    "site_admin": false
  }{{end}}

{{/* POST /applications/{client_id}/token: 200, an "authorization". */}}
{{define "authorization"}}{
  "id": 1,
  "url": "https://api.github.com/authorizations/1",
  "scopes": [
    "read:user",
    "user:email"
  ],
  "token": {{json .Token}},
  "token_last_eight": {{json (last8 .Token)}},
  "hashed_token": "25f94a2a5c7fbaf499c665bc73d67c1c87e496da8985131633ee0a95819db2e8",
  "app": {
    "url": "http://my-github-app.com",
    "name": "my github app",
    "client_id": {{json .ClientID}}
  },
  "note": "optional note",
  "note_url": "http://optional/note/url",
  "updated_at": "2011-09-06T20:39:23Z",
  "created_at": "2011-09-06T17:26:27Z",
  "fingerprint": "jklmnop12345678",{{if .ExpiresAt}}
  "expires_at": {{.ExpiresAt}},{{end}}
  "user": {{template "simple-user" .User}}
}{{end}}

{{/* GET /user: 200, a "private-user". */}}
{{define "private-user"}}{
  "login": {{json .Login}},
  "id": {{.ID}},
  "node_id": "MDQ6VXNlcjE=",
  "avatar_url": "https://github.com/images/error/octocat_happy.gif",
  "gravatar_id": "",
  "url": "https://api.github.com/users/{{.Login}}",
  "html_url": "https://github.com/{{.Login}}",
  "followers_url": "https://api.github.com/users/{{.Login}}/followers",
  "following_url": "https://api.github.com/users/{{.Login}}/following{/other_user}",
  "gists_url": "https://api.github.com/users/{{.Login}}/gists{/gist_id}",
  "starred_url": "https://api.github.com/users/{{.Login}}/starred{/owner}{/repo}",
  "subscriptions_url": "https://api.github.com/users/{{.Login}}/subscriptions",
  "organizations_url": "https://api.github.com/users/{{.Login}}/orgs",
  "repos_url": "https://api.github.com/users/{{.Login}}/repos",
  "events_url": "https://api.github.com/users/{{.Login}}/events{/privacy}",
  "received_events_url": "https://api.github.com/users/{{.Login}}/received_events",
  "type": "User",
  "site_admin": false,
  "name": {{if .Name}}{{json .Name}}{{else}}null{{end}},
  "company": "GitHub",
  "blog": "https://github.com/blog",
  "location": "San Francisco",
  "email": {{if .PublicEmail}}{{json .PublicEmail}}{{else}}null{{end}},
  "hireable": false,
  "bio": "There once was...",
  "twitter_username": "monatheoctocat",
  "public_repos": 2,
  "public_gists": 1,
  "followers": 20,
  "following": 0,
  "created_at": "2008-01-14T04:33:35Z",
  "updated_at": "2008-01-14T04:33:35Z",
  "private_gists": 81,
  "total_private_repos": 100,
  "owned_private_repos": 100,
  "disk_usage": 10000,
  "collaborators": 8,
  "two_factor_authentication": true,
  "plan": {
    "name": "Medium",
    "space": 400,
    "private_repos": 20,
    "collaborators": 0
  }
}{{end}}
`))

func render(name string, data any) (string, error) {
	var b strings.Builder
	err := templates.ExecuteTemplate(&b, name, data)
	return b.String(), err
}

// emailsAnswer is GET /user/emails: 200, an array of "email".
func emailsAnswer(emails []GitHubEmail) (string, error) {
	type email struct {
		Email      string  `json:"email"`
		Verified   bool    `json:"verified"`
		Primary    bool    `json:"primary"`
		Visibility *string `json:"visibility"`
	}
	list := []email{}
	for _, e := range emails {
		var vis *string
		if e.Visibility != "" {
			vis = &e.Visibility
		}
		list = append(list, email{e.Email, e.Verified, e.Primary, vis})
	}
	b, err := json.MarshalIndent(list, "", "  ")
	return string(b), err
}

// GitHub's error answers, as it sends them, for the fake's own use and for
// [Endpoint.Fail]. Do not modify them.
var (
	// GitHubNotFound is 404: an unknown, revoked or another app's token
	// (check a token), or a token without the user:email scope (list emails).
	GitHubNotFound = Response{Status: 404, Body: `{
  "message": "Not Found",
  "documentation_url": "https://docs.github.com/rest",
  "status": "404"
}`}
	// GitHubBadCredentials is 401: wrong client credentials (check a token)
	// or an invalid Bearer token.
	GitHubBadCredentials = Response{Status: 401, Body: `{
  "message": "Bad credentials",
  "documentation_url": "https://docs.github.com/rest",
  "status": "401"
}`}
	// GitHubValidationFailed is 422: check a token without a usable
	// access_token.
	GitHubValidationFailed = Response{Status: 422, Body: `{
  "message": "Validation Failed",
  "errors": [
    {
      "resource": "Authorization",
      "field": "access_token",
      "code": "invalid"
    }
  ],
  "documentation_url": "https://docs.github.com/rest/apps/oauth-applications#check-a-token",
  "status": "422"
}`}
	// GitHubNotAccessible is 403: a GitHub App token without the permission
	// (list emails without the email addresses permission).
	GitHubNotAccessible = Response{Status: 403, Body: `{
  "message": "Resource not accessible by integration",
  "documentation_url": "https://docs.github.com/rest/users/emails#list-email-addresses-for-the-authenticated-user",
  "status": "403"
}`}
	// GitHubRateLimited is 403: the primary rate limit is exceeded.
	GitHubRateLimited = Response{Status: 403, Header: map[string]string{
		"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0", "x-ratelimit-used": "5000",
		"x-ratelimit-reset": "1767225600", "x-ratelimit-resource": "core",
	}, Body: `{
  "message": "API rate limit exceeded for user ID 583231.",
  "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
  "status": "403"
}`}
	// GitHubSecondaryRateLimited is 403: a secondary rate limit is exceeded.
	GitHubSecondaryRateLimited = Response{Status: 403, Header: map[string]string{"retry-after": "60"}, Body: `{
  "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
  "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
  "status": "403"
}`}
	// GitHubTooManyRequests is 429: the rate limit is exceeded.
	GitHubTooManyRequests = Response{Status: 429, Header: map[string]string{"retry-after": "60", "x-ratelimit-remaining": "0"}, Body: `{
  "message": "API rate limit exceeded for user ID 583231.",
  "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
  "status": "429"
}`}
	// GitHubServerError is 500.
	GitHubServerError = Response{Status: 500, Body: `{"message":"Server Error"}`}
)
