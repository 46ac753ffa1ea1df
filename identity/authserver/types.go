package authserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// Errors of [Store].
var (
	ErrNotFound = errors.New("not found")
	ErrUsed     = errors.New("already used")
)

// Identity is who signed in upstream: what an access token carries.
type Identity struct {
	Provider      string `json:"provider"`
	Subject       string `json:"sub"`
	Email         string `json:"email,omitempty"`
	EmailVerified bool   `json:"email_verified,omitempty"`
	Name          string `json:"name,omitempty"`
	HD            string `json:"hd,omitempty"` // Google Workspace domain
}

func identityOf(p *identity.Principal) Identity {
	id := Identity{Provider: p.Provider, Subject: p.Subject, Email: p.Email, EmailVerified: p.EmailVerified, Name: p.Name}
	id.HD, _ = p.Claims["hd"].(string)
	return id
}

// Principal is the principal this identity stands for, with scopes.
func (id Identity) Principal(scopes []string, expiry time.Time) *identity.Principal {
	p := &identity.Principal{Provider: id.Provider, Subject: id.Subject, Email: id.Email, EmailVerified: id.EmailVerified,
		Name: id.Name, Scopes: scopes, Expiry: expiry}
	if id.HD != "" {
		p.Claims = map[string]any{"hd": id.HD}
	}
	return p
}

// Client is a registered or metadata-document client.
type Client struct {
	ID           string
	Kind         string // "dcr" or "cimd"
	Name         string
	RedirectURIs []string
	SecretHash   []byte // confidential DCR clients
	ClientURI    string
	// Metadata is the rest of what a DCR client registered (RFC 7591 §2:
	// logo_uri, scope, contacts, tos_uri, policy_uri, software_id,
	// software_version), kept as given and returned as stored.
	Metadata     json.RawMessage
	FetchedUntil time.Time // cimd: refetch after
}

// Request is an authorization in progress.
type Request struct {
	ID, ClientID, RedirectURI, State, Scope, Resource, CodeChallenge string
	BrowserHash                                                      []byte
	Upstream, UpstreamState, UpstreamVerifier                        string
	Identity                                                         *Identity
	ExpiresAt                                                        time.Time
}

// Code is an issued authorization code.
type Code struct {
	Hash                                                  []byte
	ClientID, RedirectURI, CodeChallenge, Resource, Scope string
	Identity                                              Identity
	Family                                                string
	ExpiresAt                                             time.Time
}

// Refresh is a refresh token.
type Refresh struct {
	Hash                              []byte
	Family, ClientID, Resource, Scope string
	Identity                          Identity
	ExpiresAt                         time.Time
}

// SigningKey is a stored signing key (see keys.go).
type SigningKey struct {
	KID, Alg                                  string
	PublicJWK                                 []byte
	PrivateEnc                                []byte
	CreatedAt, ActivateAt, RetireAt, ExpireAt time.Time
}

// Store keeps the flow's state. Implementations make UseCode and
// RotateRefresh atomic.
type Store interface {
	CreateClient(ctx context.Context, c *Client) error
	SaveClient(ctx context.Context, c *Client) error // insert or replace (metadata documents)
	FindClient(ctx context.Context, id string) (*Client, error)
	TouchClient(ctx context.Context, id string) error

	CreateRequest(ctx context.Context, r *Request) error
	FindRequest(ctx context.Context, id string) (*Request, error)
	FindRequestByUpstreamState(ctx context.Context, state string) (*Request, error)
	// UpdateRequest stores a request's upstream state, identity and scope.
	UpdateRequest(ctx context.Context, r *Request) error
	DeleteRequest(ctx context.Context, id string) error

	Consented(ctx context.Context, subject, clientID, scope string) (bool, error)
	// SaveConsent records consent to scope, in addition to any consent
	// given before.
	SaveConsent(ctx context.Context, subject, clientID, scope string) error

	CreateCode(ctx context.Context, c *Code) error
	// UseCode marks a code used and returns it; a code used before gives
	// ErrUsed (with the code, whose family the caller revokes).
	UseCode(ctx context.Context, hash []byte) (*Code, error)

	CreateRefresh(ctx context.Context, r *Refresh) error
	// RotateRefresh checks the old token (with check, under a lock; an
	// error from check changes nothing and is returned with the token),
	// marks it used and stores next (which brings only its Hash and
	// ExpiresAt; family, client, resource, scope and identity are copied
	// from the old token) and returns the old one. A token used or revoked
	// before revokes its whole family: ErrUsed.
	RotateRefresh(ctx context.Context, oldHash []byte, next *Refresh, check func(old *Refresh) error) (*Refresh, error)
	// RevokeRefresh revokes a refresh token's family if the token was
	// issued to clientID; ErrNotFound otherwise.
	RevokeRefresh(ctx context.Context, hash []byte, clientID string) error
	RevokeFamily(ctx context.Context, family string) error
	// FamilyRevoked reports whether a family was revoked (any of its
	// tokens has revoked_at).
	FamilyRevoked(ctx context.Context, family string) (bool, error)

	SigningKeys(ctx context.Context) ([]*SigningKey, error)
	// ReencryptSigningKey replaces a key's encrypted private part (after
	// the signing secret changed).
	ReencryptSigningKey(ctx context.Context, kid string, privateEnc []byte) error
	// AddSigningKey stores k unless need (called under a lock with the keys
	// then stored) says it is no longer needed.
	AddSigningKey(ctx context.Context, k *SigningKey, need func([]*SigningKey) bool) error

	DeleteExpiredOAuth(ctx context.Context) error
}

// Placement is where a person lands: shown on the consent page.
type Placement struct {
	Tenant string // "acme.com", "personal:github:5678"
	Role   string
	// Scopes are the scopes the person's role can make use of: a grant is
	// narrowed to them (at consent, and again at every token issue, since
	// the role may have changed). nil means no narrowing.
	Scopes []string
}

// Placer places a principal in its tenant with the usual rules. A refusal
// (removed, suspended, sign-up closed) wraps [ErrRefused] and its message is
// shown to the person, so it must be caller-safe; any other error is taken
// as a passing failure: logged, and answered "try again".
type Placer func(ctx context.Context, p *identity.Principal) (Placement, error)

// ErrRefused marks a Placer's refusals.
var ErrRefused = errors.New("refused")

// Refuse returns a refusal whose message is shown as is.
func Refuse(format string, args ...any) error {
	return refusal(fmt.Sprintf(format, args...))
}

type refusal string

func (r refusal) Error() string        { return string(r) }
func (r refusal) Is(target error) bool { return target == ErrRefused }

// Upstream is an identity provider people sign in with.
type Upstream struct {
	Name  string // in URLs: google, github, auth0, or an OIDC issuer's name
	Label string // on the sign-in page
	// OAuth is the client at the provider; its Endpoint may be left empty
	// when Endpoint resolves it (discovery) on first use.
	OAuth    oauth2.Config
	Endpoint func(ctx context.Context) (oauth2.Endpoint, error)
	// AuthParams are extra authorization parameters (Auth0's audience).
	AuthParams map[string]string
	// Identify learns who signed in from the upstream token response, with
	// the same verifier as a direct token; the token is not kept.
	Identify   func(ctx context.Context, tok *oauth2.Token) (*identity.Principal, error)
	HTTPClient *http.Client
}

func splitScope(s string) []string { return strings.Fields(s) }
