package authserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// accessClaims are the claims of a Gatehouse access token (RFC 9068 shape).
type accessClaims struct {
	Issuer   string `json:"iss"`
	Audience string `json:"aud"`
	Subject  string `json:"sub"`
	Expiry   int64  `json:"exp"`
	IssuedAt int64  `json:"iat"`
	JTI      string `json:"jti"`
	ClientID string `json:"client_id,omitempty"`
	Scope    string `json:"scope"`
	// The upstream identity the token stands for.
	Provider      string `json:"provider"`
	Email         string `json:"email,omitempty"`
	EmailVerified bool   `json:"email_verified,omitempty"`
	Name          string `json:"name,omitempty"`
	HD            string `json:"hd,omitempty"`
	// The tenant the person was placed in when the token was issued: a
	// token is refused if they are placed elsewhere now.
	Tenant string `json:"tenant,omitempty"`
	// The sign-in (refresh-token family) the token was issued in: revoking
	// the sign-in revokes the token.
	Family string `json:"fam,omitempty"`
	// Developer tokens only (gatehouse token mint): a fixed tenant and role.
	TenantID string `json:"gatehouse_tenant,omitempty"`
	Role     string `json:"gatehouse_role,omitempty"`
}

// TenantClaim is the Principal claim carrying the tenant key a Gatehouse
// token was issued in.
const TenantClaim = "tenant"

// FamilyClaim is the Principal claim carrying the sign-in (refresh-token
// family) a Gatehouse token was issued in.
const FamilyClaim = "fam"

// issue signs an access token for id, placed in tenant, with scopes, in
// the sign-in family, valid for ttl.
func (s *Server) issue(id Identity, tenant, clientID, scope, family string, ttl time.Duration) (string, error) {
	return s.sign(accessClaims{Subject: id.Subject, ClientID: clientID, Scope: scope, Provider: id.Provider,
		Email: id.Email, EmailVerified: id.EmailVerified, Name: id.Name, HD: id.HD, Tenant: tenant, Family: family}, ttl)
}

func (s *Server) sign(c accessClaims, ttl time.Duration) (string, error) {
	now := time.Now()
	var jti [12]byte
	_, _ = rand.Read(jti[:])
	c.Issuer, c.Audience, c.IssuedAt, c.Expiry, c.JTI = s.cfg.Issuer, s.cfg.Resource, now.Unix(), now.Add(ttl).Unix(), hex.EncodeToString(jti[:])
	return s.cfg.Keys.sign(c)
}

// MintDeveloperToken signs a token that acts in tenantID with role, for
// local testing and scripts (gatehouse token mint). It is refused unless
// the server runs in developer mode or the caller is an operator on the
// database (the CLI decides).
func (s *Server) MintDeveloperToken(subject, tenantID, role, scope string, ttl time.Duration) (string, error) {
	if ttl <= 0 || ttl > maxTokenLife {
		return "", errors.New("a developer token lives between 1s and 24h")
	}
	return s.sign(accessClaims{Subject: "dev:" + subject, Provider: "dev", Scope: scope, TenantID: tenantID, Role: role}, ttl)
}

// Verifier verifies Gatehouse's own access tokens: route JWTs whose iss is
// the issuer to it.
type Verifier struct{ s *Server }

var _ identity.Verifier = Verifier{}

// Verifier returns the verifier of this server's tokens.
func (s *Server) Verifier() Verifier { return Verifier{s} }

// Issuers lists the iss values to route here.
func (v Verifier) Issuers() []string { return []string{v.s.cfg.Issuer} }

// Verify implements identity.Verifier.
func (v Verifier) Verify(ctx context.Context, token string) (*identity.Principal, error) {
	payload, err := v.s.cfg.Keys.verify(ctx, token)
	switch {
	case err == nil:
	case isStoreError(err):
		return nil, fmt.Errorf("%w: %w", identity.ErrUnavailable, err)
	case errors.Is(err, errUnknownKey):
		return nil, identity.Invalid("the token is signed with a key this server does not publish")
	case errors.Is(err, errMalformed):
		return nil, identity.Invalid("the token is malformed or not signed with ES256")
	default:
		return nil, identity.Invalid("the token's signature is invalid")
	}
	var c accessClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, identity.Invalid("the token's claims are malformed")
	}
	now := time.Now()
	switch {
	case c.Issuer != v.s.cfg.Issuer:
		return nil, identity.Invalid("the token was issued by %q, not by this server", c.Issuer)
	case c.Audience != v.s.cfg.Resource:
		return nil, identity.Invalid("the token is for another resource (%q), not %s", c.Audience, v.s.cfg.Resource)
	case c.Subject == "" || c.Provider == "":
		return nil, identity.Invalid("the token names no subject")
	case now.Unix() >= c.Expiry:
		return nil, identity.Invalid("the token has expired")
	case c.IssuedAt > now.Add(time.Minute).Unix():
		return nil, identity.Invalid("the token is not valid yet")
	}
	if c.Family != "" {
		// A revoked sign-in (the person revoked it in the console, the
		// client revoked it, or a refresh token was reused) ends its access
		// tokens too: checked here, on every validation the resolver does
		// not answer from its cache, whose entries live at most
		// GATEHOUSE_AUTH_CACHE_TTL (a minute by default) and are dropped at
		// once on every replica when the console revokes the sign-in.
		revoked, err := v.s.cfg.Store.FamilyRevoked(ctx, c.Family)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", identity.ErrUnavailable, err)
		}
		if revoked {
			return nil, identity.Invalid("this sign-in was revoked; sign in again")
		}
	}
	id := Identity{Provider: c.Provider, Subject: c.Subject, Email: c.Email, EmailVerified: c.EmailVerified, Name: c.Name, HD: c.HD}
	p := id.Principal(splitScope(c.Scope), time.Unix(c.Expiry, 0))
	p.TenantID, p.Role = c.TenantID, c.Role
	if c.Tenant != "" {
		if p.Claims == nil {
			p.Claims = map[string]any{}
		}
		p.Claims[TenantClaim] = c.Tenant
	}
	if c.Family != "" {
		p.Claims[FamilyClaim] = c.Family
	}
	return p, nil
}

// storeError marks failures to load keys from the store.
type storeError struct{ error }

func (e storeError) Unwrap() error { return e.error }

func isStoreError(err error) bool {
	var se storeError
	return errors.As(err, &se)
}

// SignedIn reports whether p stands for an access token this server issued
// through OAuth sign-in (developer tokens are not): its holder's client can
// sign in again for wider scopes, so a scope the token lacks is answered
// with a step-up challenge (MCP authorization, scope challenge handling)
// rather than a refusal nobody can act on.
func SignedIn(p *identity.Principal) bool {
	tenant, _ := p.Claims[TenantClaim].(string)
	return tenant != ""
}
