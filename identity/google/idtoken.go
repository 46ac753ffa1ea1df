package google

import (
	"context"
	"fmt"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/oidc"
)

// IDTokenVerifier verifies Google ID tokens through the oidc package and
// adds what the generic OIDC principal lacks: the hosted domain (hd).
type IDTokenVerifier struct {
	oidc *oidc.Verifier
}

var _ identity.Verifier = (*IDTokenVerifier)(nil)

// Verify implements [identity.Verifier].
func (v *IDTokenVerifier) Verify(ctx context.Context, token string) (*identity.Principal, error) {
	c, err := v.oidc.Claims(ctx, token)
	if err != nil {
		return nil, fmt.Errorf("google: ID token: %w", err)
	}
	hd, _ := c.Raw["hd"].(string)
	return &identity.Principal{
		Provider:      "google",
		Subject:       "google:" + c.Subject,
		Email:         c.Email,
		EmailVerified: c.EmailVerified,
		Name:          c.Name,
		Scopes:        c.Scopes,
		Expiry:        c.Expiry,
		Claims:        hostedDomain(hd),
	}, nil
}

// Check fetches Google's discovery document and keys now (see
// [oidc.Verifier.Check]), for the start-up report.
func (v *IDTokenVerifier) Check(ctx context.Context) error { return v.oidc.Check(ctx) }

// Issuer is the configured issuer.
func (v *IDTokenVerifier) Issuer() string { return v.oidc.Issuer() }

// Issuers lists the iss values Google ID tokens carry, for routing.
func (v *IDTokenVerifier) Issuers() []string { return v.oidc.Issuers() }

// JWKSFetches counts requests for Google's signing keys so far.
func (v *IDTokenVerifier) JWKSFetches() int64 { return v.oidc.JWKSFetches() }

// hostedDomain returns the principal claims for a Workspace hosted domain:
// none when Google asserts none (a consumer account).
func hostedDomain(hd string) map[string]any {
	if hd == "" {
		return nil
	}
	return map[string]any{"hd": hd}
}

// Endpoints returns Google's sign-in endpoints, from discovery.
func (v *IDTokenVerifier) Endpoints(ctx context.Context) (authURL, tokenURL string, err error) {
	return v.oidc.Endpoints(ctx)
}
