package oidc

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// Claims are a verified token's claims.
type Claims struct {
	Issuer        string
	Subject       string
	Audience      []string
	Expiry        time.Time
	Email         string
	EmailVerified bool
	Name          string
	Scopes        []string       // from scope (space-separated), scp and permissions
	Raw           map[string]any // every claim
}

// Claims verifies token and returns its claims, or an error wrapping
// identity.ErrInvalidToken (with a caller-safe reason) or
// identity.ErrUnavailable.
func (v *Verifier) Claims(ctx context.Context, token string) (*Claims, error) {
	if alg, _, _ := identity.PeekJWT(token); alg != "" && !slices.Contains(v.cfg.Algorithms, alg) {
		return nil, identity.Invalid("the token's signing algorithm %q is not accepted", alg)
	}
	o := &outcome{}
	t, err := v.verifier.Verify(context.WithValue(ctx, outcomeKey{}, o), token)
	if err != nil {
		return nil, v.explain(err, o)
	}
	if !slices.Contains(v.issuers, t.Issuer) {
		return nil, identity.Invalid("the token was issued by %q, not by this provider", t.Issuer)
	}
	if !slices.ContainsFunc(t.Audience, func(a string) bool { return slices.Contains(v.cfg.Audiences, a) }) {
		return nil, identity.Invalid("the token is not intended for this server (audience %q)", strings.Join(t.Audience, " "))
	}
	if t.Subject == "" {
		return nil, identity.Invalid("the token has no subject")
	}
	c := &Claims{Issuer: t.Issuer, Subject: t.Subject, Audience: t.Audience, Expiry: t.Expiry}
	if err := t.Claims(&c.Raw); err != nil {
		return nil, identity.Invalid("the token's claims are malformed")
	}
	c.Email, _ = c.Raw[v.cfg.EmailClaim].(string)
	verifiedClaim := "email_verified"
	if v.cfg.EmailClaim != "email" {
		verifiedClaim = v.cfg.EmailClaim + "_verified"
	}
	c.EmailVerified = truthy(c.Raw[verifiedClaim])
	c.Name, _ = c.Raw["name"].(string)
	c.Scopes = scopes(c.Raw)
	return c, nil
}

// explain turns go-oidc's (flattened) errors into caller-safe reasons.
func (v *Verifier) explain(err error, o *outcome) error {
	var expired *gooidc.TokenExpiredError
	msg := err.Error()
	switch {
	case o.unavailable != nil:
		return o.unavailable
	case errors.As(err, &expired):
		return identity.Invalid("the token has expired")
	case strings.Contains(msg, "nbf"):
		return identity.Invalid("the token is not valid yet (nbf)")
	case strings.Contains(msg, errUnknownKey.Error()):
		return identity.Invalid("the token is signed with a key the issuer does not publish")
	case strings.Contains(msg, "failed to verify signature"):
		return identity.Invalid("the token's signature is invalid")
	}
	return identity.Invalid("the token is malformed")
}

// Verify implements identity.Verifier for a generic issuer: subject
// "<name>:<sub>".
func (v *Verifier) Verify(ctx context.Context, token string) (*identity.Principal, error) {
	c, err := v.Claims(ctx, token)
	if err != nil {
		return nil, err
	}
	return &identity.Principal{
		Provider:      v.cfg.Name,
		Subject:       v.cfg.Name + ":" + c.Subject,
		Email:         c.Email,
		EmailVerified: c.EmailVerified,
		Name:          c.Name,
		Scopes:        c.Scopes,
		Expiry:        c.Expiry,
		Claims:        map[string]any{"iss": c.Issuer},
	}, nil
}

// truthy reads a boolean claim that some issuers send as a string.
func truthy(v any) bool {
	switch b := v.(type) {
	case bool:
		return b
	case string:
		return strings.EqualFold(b, "true")
	}
	return false
}

// scopes collects delegated scopes from the claims issuers use for them.
func scopes(raw map[string]any) []string {
	var out []string
	add := func(s string) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if s, ok := raw["scope"].(string); ok {
		for _, f := range strings.Fields(s) {
			add(f)
		}
	}
	for _, name := range []string{"scp", "permissions"} {
		switch v := raw[name].(type) {
		case string:
			for _, f := range strings.Fields(v) {
				add(f)
			}
		case []any:
			for _, e := range v {
				if s, ok := e.(string); ok {
					add(s)
				}
			}
		}
	}
	return out
}
