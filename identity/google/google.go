package google

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/oidc"
)

// Google's production endpoints, used when a [Config] names none.
const (
	DefaultIssuer       = "https://accounts.google.com"
	DefaultTokenInfoURL = "https://oauth2.googleapis.com/tokeninfo"
	DefaultUserInfoURL  = "https://openidconnect.googleapis.com/v1/userinfo"
)

// AccessTokenPrefix starts Google OAuth access tokens; the resolver routes
// credentials with it to [Provider.AccessTokens].
const AccessTokenPrefix = "ya29."

// Config configures the Google provider.
type Config struct {
	// ClientID is Gatehouse's OAuth client id: ID tokens must name it as
	// aud, access tokens as aud (and azp). Required.
	ClientID string
	// ClientSecret is used for sign-in, not for verification.
	ClientSecret string
	// Issuer is Google's issuer (default DefaultIssuer); the same value
	// without its scheme is accepted too, as Google still issues it.
	Issuer string
	// TokenInfoURL checks access tokens (default DefaultTokenInfoURL).
	TokenInfoURL string
	// UserInfoURL describes an access token's user (default DefaultUserInfoURL).
	UserInfoURL string
	// JWKSURL skips discovery when set.
	JWKSURL string
	// AllowInsecure permits plain-http URLs (tests, local fakes).
	AllowInsecure bool
	// HTTPClient makes the calls to Google; nil means
	// [identity.DefaultHTTPClient].
	HTTPClient *http.Client
}

// Provider verifies Google credentials: ID tokens and access tokens.
type Provider struct {
	idTokens     *IDTokenVerifier
	accessTokens *accessVerifier
}

// Open validates the config, reporting every problem at once, and returns
// the provider. It makes no network calls.
func (c Config) Open() (*Provider, error) {
	c.Issuer = cmp.Or(c.Issuer, DefaultIssuer)
	c.TokenInfoURL = cmp.Or(c.TokenInfoURL, DefaultTokenInfoURL)
	c.UserInfoURL = cmp.Or(c.UserInfoURL, DefaultUserInfoURL)
	c.HTTPClient = cmp.Or(c.HTTPClient, identity.DefaultHTTPClient)
	if err := c.validate(); err != nil {
		return nil, err
	}
	v, err := oidc.Config{
		Name:          "google",
		Issuer:        c.Issuer,
		IssuerAliases: schemeless(c.Issuer),
		Audiences:     []string{c.ClientID},
		JWKSURL:       c.JWKSURL,
		AllowInsecure: c.AllowInsecure,
		HTTPClient:    c.HTTPClient,
	}.Open()
	if err != nil {
		return nil, fmt.Errorf("google: %w", err)
	}
	return &Provider{
		idTokens: &IDTokenVerifier{oidc: v},
		accessTokens: &accessVerifier{
			clientID:     c.ClientID,
			tokenInfoURL: c.TokenInfoURL,
			userInfoURL:  c.UserInfoURL,
			client:       c.HTTPClient,
			now:          time.Now,
		},
	}, nil
}

func (c Config) validate() error {
	var errs []error
	if c.ClientID == "" {
		errs = append(errs, errors.New("google: the client id is required (tokens issued to other applications must be refused)"))
	}
	urls := []struct{ name, value string }{
		{"issuer", c.Issuer}, {"JWKS URL", c.JWKSURL}, {"token info URL", c.TokenInfoURL}, {"userinfo URL", c.UserInfoURL},
	}
	for _, u := range urls {
		if u.value == "" {
			continue // only the optional JWKS URL can be empty here
		}
		if err := checkURL(u.value, c.AllowInsecure); err != nil {
			errs = append(errs, fmt.Errorf("google: %s: %w", u.name, err))
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

// schemeless returns the issuer without its scheme ("accounts.google.com"),
// which Google also uses as iss in ID tokens.
func schemeless(issuer string) []string {
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" {
		return nil
	}
	return []string{u.Host + u.Path}
}

// IDTokens verifies Google ID tokens; route JWTs whose iss is one of its
// Issuers to it.
func (p *Provider) IDTokens() *IDTokenVerifier { return p.idTokens }

// AccessTokens verifies Google access tokens; route credentials starting
// with [AccessTokenPrefix] to it.
func (p *Provider) AccessTokens() identity.Verifier { return p.accessTokens }
