package auth0

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/oidc"
)

// DefaultUserInfoTTL is how long a subject's /userinfo answer is reused
// unless configured.
const DefaultUserInfoTTL = 10 * time.Minute

// Config configures the Auth0 provider.
type Config struct {
	// Domain is the tenant's domain ("example.us.auth0.com", or a custom
	// domain). Required unless Issuer is set.
	Domain string
	// Audience is the identifier of Gatehouse's API in Auth0: a token's aud
	// (a string or an array) must contain it. Required.
	Audience string
	// ClientID and ClientSecret are used for sign-in, not for verification.
	ClientID     string
	ClientSecret string
	// EmailClaim names a custom (namespaced) claim carrying the user's
	// email, such as "https://gatehouse.example.com/email", set by an Auth0
	// Action; EmailClaim+"_verified" carries its verified flag. When a token
	// lacks it, the email is read from /userinfo.
	EmailClaim string
	// Issuer is the exact iss (default "https://"+Domain+"/": Auth0's
	// issuers end with a slash).
	Issuer string
	// UserInfoURL is Auth0's userinfo endpoint (default Issuer+"userinfo").
	UserInfoURL string
	// JWKSURL skips discovery when set.
	JWKSURL string
	// AllowInsecure permits plain-http URLs (tests, local fakes).
	AllowInsecure bool
	// HTTPClient makes the calls to Auth0; nil means
	// [identity.DefaultHTTPClient].
	HTTPClient *http.Client
	// UserInfoTTL bounds how long a subject's /userinfo answer is reused
	// (default DefaultUserInfoTTL).
	UserInfoTTL time.Duration
}

// Verifier verifies access tokens of one Auth0 tenant.
type Verifier struct {
	oidc  *oidc.Verifier
	users *userInfoClient
}

var _ identity.Verifier = (*Verifier)(nil)

// Open validates the config, reporting every problem at once, and returns
// the verifier. It makes no network calls.
func (c Config) Open() (*Verifier, error) {
	if c.Issuer == "" && c.Domain != "" {
		c.Issuer = "https://" + c.Domain + "/"
	}
	if c.UserInfoURL == "" && c.Issuer != "" {
		c.UserInfoURL = strings.TrimSuffix(c.Issuer, "/") + "/userinfo"
	}
	c.UserInfoTTL = cmp.Or(c.UserInfoTTL, DefaultUserInfoTTL)
	c.HTTPClient = cmp.Or(c.HTTPClient, identity.DefaultHTTPClient)
	if err := c.validate(); err != nil {
		return nil, err
	}
	v, err := oidc.Config{
		Name:          "auth0",
		Issuer:        c.Issuer,
		Audiences:     []string{c.Audience},
		JWKSURL:       c.JWKSURL,
		Algorithms:    []string{"RS256"},
		EmailClaim:    c.EmailClaim,
		AllowInsecure: c.AllowInsecure,
		HTTPClient:    c.HTTPClient,
	}.Open()
	if err != nil {
		return nil, fmt.Errorf("auth0: %w", err)
	}
	return &Verifier{oidc: v, users: newUserInfoClient(c.UserInfoURL, c.HTTPClient, c.UserInfoTTL)}, nil
}

func (c Config) validate() error {
	var errs []error
	if c.Domain == "" && c.Issuer == "" {
		errs = append(errs, errors.New("auth0: the domain (or the issuer) is required"))
	}
	if c.Domain != "" {
		if u, err := url.Parse("https://" + c.Domain + "/"); err != nil || u.Host != c.Domain || u.Path != "/" {
			errs = append(errs, fmt.Errorf("auth0: the domain %q must be a host name such as example.us.auth0.com, without scheme or path", c.Domain))
		}
	}
	if c.Audience == "" {
		errs = append(errs, errors.New("auth0: the audience (the identifier of Gatehouse's API in Auth0) is required"))
	}
	if c.UserInfoTTL < 0 {
		errs = append(errs, fmt.Errorf("auth0: the userinfo TTL %v is negative", c.UserInfoTTL))
	}
	urls := []struct{ name, value string }{{"issuer", c.Issuer}, {"userinfo URL", c.UserInfoURL}, {"JWKS URL", c.JWKSURL}}
	for _, u := range urls {
		if u.value == "" {
			continue // missing issuer reported above; JWKS URL optional
		}
		if err := checkURL(u.value, c.AllowInsecure); err != nil {
			errs = append(errs, fmt.Errorf("auth0: %s: %w", u.name, err))
		}
	}
	return errors.Join(errs...)
}

func checkURL(s string, insecure bool) error {
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Host == "":
		return fmt.Errorf("%q is not an absolute URL", s)
	case u.Scheme == "http" && !insecure:
		return fmt.Errorf("%q is plain http; use https (or allow insecure issuers for local testing)", s)
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	return nil
}

// Verify implements [identity.Verifier].
func (v *Verifier) Verify(ctx context.Context, token string) (*identity.Principal, error) {
	c, err := v.oidc.Claims(ctx, token)
	if err != nil {
		return nil, fmt.Errorf("auth0: %w", err)
	}
	p := &identity.Principal{
		Provider:      "auth0",
		Subject:       "auth0:" + c.Subject,
		Email:         c.Email,
		EmailVerified: c.EmailVerified,
		Name:          c.Name,
		Scopes:        c.Scopes,
		Expiry:        c.Expiry,
	}
	// /userinfo answers only tokens granted the openid scope; asking
	// without it would fail a token that is otherwise good.
	if p.Email != "" || !slices.Contains(c.Scopes, "openid") {
		return p, nil
	}
	prof, err := v.users.lookup(ctx, c.Subject, token)
	switch {
	case err != nil:
		return nil, err
	case prof == nil:
		return p, nil // the token may not read the profile: no email
	}
	p.Email, p.EmailVerified = prof.email, prof.emailVerified
	p.Name = cmp.Or(p.Name, prof.name)
	return p, nil
}

// Check fetches the tenant's discovery document and keys now (see
// [oidc.Verifier.Check]), for the start-up report.
func (v *Verifier) Check(ctx context.Context) error { return v.oidc.Check(ctx) }

// Issuer is the configured issuer (https://DOMAIN/ unless overridden).
func (v *Verifier) Issuer() string { return v.oidc.Issuer() }

// Issuers lists the iss values this tenant's tokens carry, for routing.
func (v *Verifier) Issuers() []string { return v.oidc.Issuers() }

// JWKSFetches counts requests for the tenant's signing keys so far.
func (v *Verifier) JWKSFetches() int64 { return v.oidc.JWKSFetches() }

// Endpoints returns the tenant's sign-in endpoints, from discovery.
func (v *Verifier) Endpoints(ctx context.Context) (authURL, tokenURL string, err error) {
	return v.oidc.Endpoints(ctx)
}
