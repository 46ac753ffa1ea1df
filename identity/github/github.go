package github

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// Prefixes are the token prefixes the resolver routes to this provider:
// user tokens of OAuth apps (gho_) and GitHub Apps (ghu_), and personal
// access tokens (ghp_, github_pat_), which are routed here only so that
// they are rejected with a helpful reason.
var Prefixes = []string{"gho_", "ghu_", "ghp_", "github_pat_"}

// patPrefixes start personal access tokens, which are never issued to an app.
var patPrefixes = []string{"ghp_", "github_pat_"}

// defaultAPIURL is the REST API of github.com.
const defaultAPIURL = "https://api.github.com"

// Reasons given to callers (safe to show: they never contain the token).
const (
	reasonMalformed = "the GitHub token is malformed"
	reasonNotOurs   = "the GitHub token is not valid for this server"
	reasonPAT       = "GitHub personal access tokens are not accepted; sign in through an MCP client instead"
)

// Config configures the GitHub provider.
type Config struct {
	// ClientID and ClientSecret are the credentials of the OAuth app (or
	// GitHub App) that issues the tokens Gatehouse accepts.
	ClientID     string
	ClientSecret string
	// APIURL is the REST API base URL (default https://api.github.com; for
	// GitHub Enterprise Server, https://HOST/api/v3).
	APIURL string
	// HTTPClient makes the calls to GitHub; nil means
	// [identity.DefaultHTTPClient].
	HTTPClient *http.Client
}

// Open validates the config, reporting every problem at once, and returns
// the verifier.
func (c Config) Open() (identity.Verifier, error) {
	var errs []error
	if c.ClientID == "" {
		errs = append(errs, errors.New("github: the client id is required"))
	}
	if c.ClientSecret == "" {
		errs = append(errs, errors.New("github: the client secret is required"))
	}
	base, err := parseAPIURL(cmp.Or(c.APIURL, defaultAPIURL))
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &verifier{
		clientID:     c.ClientID,
		clientSecret: c.ClientSecret,
		client:       cmp.Or(c.HTTPClient, identity.DefaultHTTPClient),
		checkURL:     base.JoinPath("applications", c.ClientID, "token").String(),
		userURL:      base.JoinPath("user").String(),
		emailsURL:    base.JoinPath("user", "emails").String() + "?per_page=100",
	}, nil
}

func parseAPIURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("github: the API URL %q must be an absolute http(s) URL", s)
	}
	return u, nil
}

// verifier checks GitHub user tokens.
type verifier struct {
	clientID, clientSecret       string
	client                       *http.Client
	checkURL, userURL, emailsURL string
}

var _ identity.Verifier = (*verifier)(nil)

// Verify implements [identity.Verifier]: it proves the token was issued to
// our app, then reads the user and their verified primary email.
func (v *verifier) Verify(ctx context.Context, token string) (*identity.Principal, error) {
	if malformed(token) {
		return nil, identity.Invalid(reasonMalformed)
	}
	expiry, err := v.checkToken(ctx, token)
	if err != nil {
		return nil, err
	}
	u, err := v.user(ctx, token)
	if err != nil {
		return nil, err
	}
	email, err := v.verifiedPrimaryEmail(ctx, token)
	if err != nil {
		return nil, err
	}
	return &identity.Principal{
		Provider:      "github",
		Subject:       "github:" + strconv.FormatInt(u.ID, 10),
		Email:         email,
		EmailVerified: email != "",
		Name:          cmp.Or(u.Name, u.Login),
		Expiry:        expiry,
		Claims:        map[string]any{"login": u.Login},
	}, nil
}

// malformed reports whether token cannot be a GitHub token: empty, too long,
// or holding anything but printable ASCII (whitespace, control characters).
func malformed(token string) bool {
	if token == "" || len(token) > identity.MaxTokenBytes {
		return true
	}
	for i := range len(token) {
		if token[i] <= ' ' || token[i] > '~' {
			return true
		}
	}
	return false
}

func isPAT(token string) bool {
	for _, p := range patPrefixes {
		if strings.HasPrefix(token, p) {
			return true
		}
	}
	return false
}

// expiryOf turns GitHub's optional expires_at into a Principal expiry.
func expiryOf(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}
