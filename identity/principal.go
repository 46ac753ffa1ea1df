package identity

import (
	"context"
	"slices"
	"time"
)

// Scopes a credential can delegate.
const (
	ScopeRead  = "mcp:read"
	ScopeWrite = "mcp:write"
	ScopeAdmin = "mcp:admin"
)

// AllScopes lists the Gatehouse scopes in canonical order.
var AllScopes = []string{ScopeRead, ScopeWrite, ScopeAdmin}

// Principal is an authenticated caller.
type Principal struct {
	Provider      string    // "apikey", "google", "github", ...
	Subject       string    // stable and provider-qualified: "apikey:k_x", "github:5678" (never a login)
	Email         string    // as asserted by the provider
	EmailVerified bool      // the provider vouches for Email
	Name          string    // display name, may be empty
	Scopes        []string  // what the credential was delegated
	Expiry        time.Time // when the credential stops being valid; zero: it does not expire
	APIKeyID      string    // set for API keys
	TenantID      string    // set when the credential itself belongs to a tenant (API keys)
	TenantKey     string    // set when the credential names its tenant by key, such as acme.com (client certificates)
	Role          string    // role ceiling carried by the credential, if any ("admin", ...)
	// AllowedNetworks are the source networks the credential may be used
	// from (API keys, client certificates); empty: anywhere. The HTTP
	// layer checks them on every request, cached principals included.
	AllowedNetworks Networks
	Claims          map[string]any
}

// HasScope reports whether the credential carries scope s.
func (p *Principal) HasScope(s string) bool { return slices.Contains(p.Scopes, s) }

// Verifier validates one kind of credential.
//
// Verify returns an error wrapping [ErrInvalidToken] (use [Invalid]) when the
// credential is not acceptable, and one wrapping [ErrUnavailable] when it
// cannot tell because an upstream is failing.
type Verifier interface {
	Verify(ctx context.Context, token string) (*Principal, error)
}
