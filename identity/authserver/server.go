package authserver

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// Config configures a [Server].
type Config struct {
	Issuer    string // the public URL, e.g. https://mcp.example.com
	Resource  string // the MCP resource tokens are for: Issuer + "/mcp"
	Store     Store
	Keys      *Keys
	Upstreams []*Upstream
	Place     Placer
	// Scopes are the scopes clients may ask for (default: the Gatehouse
	// scopes); DefaultScope is granted when a client asks for none.
	Scopes       []string
	DefaultScope string
	TokenTTL     time.Duration // access tokens (default and at most 1h)
	RefreshTTL   time.Duration // refresh tokens (default 30 days)
	// Dev allows client metadata documents on private and loopback
	// addresses (local development only).
	Dev bool
	// AllowRegistration rate-limits dynamic registration per client IP.
	AllowRegistration func(ctx context.Context, ip string) (ok bool, retryAfter time.Duration)
	// ClientIP tells the client's address (trusted-proxy aware).
	ClientIP   func(*http.Request) string
	HTTPClient *http.Client // for metadata documents (nil: an SSRF-safe client)
	Logger     *slog.Logger
}

// Server is the authorization server.
type Server struct {
	cfg  Config
	mux  *http.ServeMux
	log  *slog.Logger
	cimd *http.Client
	// firstParty receives first-party sign-ins (see SetFirstParty).
	firstParty FirstParty
}

// New checks the configuration and returns a Server.
func New(cfg Config) (*Server, error) {
	var errs []error
	if u, err := url.Parse(cfg.Issuer); err != nil || u.Host == "" || u.Path != "" {
		errs = append(errs, fmt.Errorf("issuer %q must be an absolute URL without a path", cfg.Issuer))
	}
	if cfg.Store == nil || cfg.Keys == nil {
		errs = append(errs, errors.New("Config.Store and Config.Keys are required"))
	}
	if len(cfg.Upstreams) > 0 && cfg.Place == nil {
		errs = append(errs, errors.New("sign-in needs a Placer (Config.Place)"))
	}
	seen := map[string]bool{}
	for _, u := range cfg.Upstreams {
		if u.Name == "" || seen[u.Name] || strings.ContainsAny(u.Name, "/?#: ") || u.Identify == nil {
			errs = append(errs, fmt.Errorf("upstream %q: a unique name without / ? # : or spaces, and Identify, are required", u.Name))
		}
		seen[u.Name] = true
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("authorization server: %w", err)
	}
	if cfg.Resource == "" {
		cfg.Resource = cfg.Issuer + "/mcp"
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = identity.AllScopes
	}
	if cfg.DefaultScope == "" {
		cfg.DefaultScope = identity.ScopeRead + " " + identity.ScopeWrite
	}
	if cfg.TokenTTL <= 0 || cfg.TokenTTL > time.Hour {
		cfg.TokenTTL = time.Hour
	}
	if cfg.RefreshTTL <= 0 {
		cfg.RefreshTTL = 30 * 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ClientIP == nil {
		cfg.ClientIP = func(r *http.Request) string {
			if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
				return host
			}
			return r.RemoteAddr
		}
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), cimd: cfg.HTTPClient}
	if s.cimd == nil {
		s.cimd = safeClient(cfg.Dev)
	}
	// Endpoints a browser-based client (MCP Inspector) calls from its own
	// origin: the mount answers CORS for them (see MetadataPaths, APIPaths).
	s.mux.HandleFunc("GET /.well-known/oauth-authorization-server", s.metadata)
	s.mux.HandleFunc("POST /oauth/register", s.register)
	s.mux.HandleFunc("POST /oauth/token", s.token)
	s.mux.HandleFunc("POST /oauth/revoke", s.revoke)
	s.mux.HandleFunc("GET /oauth/jwks", s.jwks)
	// The person's browser steps.
	s.mux.HandleFunc("GET /oauth/authorize", s.authorize)
	s.mux.HandleFunc("GET /oauth/login/{provider}", s.login)
	s.mux.HandleFunc("GET /oauth/callback/{provider}", s.callback)
	s.mux.HandleFunc("POST /oauth/consent", s.consent)
	return s, nil
}

// Handler serves every endpoint; mount it for [Paths], with CORS for
// [MetadataPaths] and [APIPaths].
func (s *Server) Handler() http.Handler { return s.mux }

// SignIn reports whether people can sign in (an upstream is configured).
// Without, the server only verifies the tokens its keys signed (developer
// tokens) and its endpoints should not be advertised.
func (s *Server) SignIn() bool { return len(s.cfg.Upstreams) > 0 }

// Maintain rotates the signing keys when the schedule calls for it and
// drops expired flow state. Call it every few minutes on every replica.
func (s *Server) Maintain(ctx context.Context) error {
	return errors.Join(s.cfg.Keys.Rotate(ctx), s.cfg.Store.DeleteExpiredOAuth(ctx))
}

// Paths are the paths Handler serves, for mounting; "/oauth/*" stands for
// every other /oauth/ path.
var Paths = []string{"/.well-known/oauth-authorization-server", "/oauth/jwks",
	"/oauth/register", "/oauth/token", "/oauth/revoke", "/oauth/*"}

// MetadataPaths are the public documents among Paths: the mount lets any
// web origin read them (CORS).
var MetadataPaths = []string{"/.well-known/oauth-authorization-server", "/oauth/jwks"}

// APIPaths are the endpoints among Paths that a client calls with fetch:
// the mount answers CORS for any origin, since they use no cookies and are
// protected by PKCE and client authentication. The other /oauth/ paths are
// the person's browser steps (navigations), which answer no CORS.
var APIPaths = []string{"/oauth/register", "/oauth/token", "/oauth/revoke"}

// metadata is the authorization server metadata (RFC 8414). It is not
// served as OpenID Connect discovery (/.well-known/openid-configuration):
// Gatehouse issues no ID tokens and has no userinfo endpoint, so it is not
// an OpenID provider, and MCP clients try RFC 8414 first.
func (s *Server) metadata(w http.ResponseWriter, r *http.Request) {
	i := s.cfg.Issuer
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                         i,
		"authorization_endpoint":                         i + "/oauth/authorize",
		"token_endpoint":                                 i + "/oauth/token",
		"registration_endpoint":                          i + "/oauth/register",
		"revocation_endpoint":                            i + "/oauth/revoke",
		"jwks_uri":                                       i + "/oauth/jwks",
		"response_types_supported":                       []string{"code"},
		"response_modes_supported":                       []string{"query"},
		"grant_types_supported":                          []string{"authorization_code", "refresh_token"},
		"code_challenge_methods_supported":               []string{"S256"},
		"token_endpoint_auth_methods_supported":          []string{"none", "client_secret_basic", "client_secret_post"},
		"revocation_endpoint_auth_methods_supported":     []string{"none", "client_secret_basic", "client_secret_post"},
		"scopes_supported":                               s.cfg.Scopes,
		"client_id_metadata_document_supported":          true,
		"authorization_response_iss_parameter_supported": true,
	})
}

func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, http.StatusOK, s.cfg.Keys.JWKS())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// oauthError answers an endpoint error (RFC 6749 §5.2).
func oauthError(w http.ResponseWriter, status int, code, description string) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, map[string]string{"error": code, "error_description": description})
}

func hash(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}

// grantable is the scope granted for a requested one. RFC 6749 §3.3 lets
// the server grant less than asked: the Gatehouse scopes among those asked
// are granted (canonically ordered) and any other token (offline_access,
// which changes nothing since every sign-in gets a refresh token; openid,
// profile, email of generic OAuth clients; anything unknown) is left out;
// the token response names what was granted. No scope asked means the
// default. ok is false only when scopes were asked and none of them is one
// this server offers.
func (s *Server) grantable(requested string) (scope string, ok bool) {
	if strings.TrimSpace(requested) == "" {
		return s.cfg.DefaultScope, true
	}
	known, _ := identity.ParseScope(requested)
	known = identity.IntersectScopes(known, s.cfg.Scopes)
	if len(known) == 0 {
		return "", false
	}
	return strings.Join(known, " "), true
}

// capScope narrows a scope to what the person's placement can use (see
// [Placement.Scopes]); ok is false when nothing is left.
func capScope(scope string, place Placement) (string, bool) {
	if place.Scopes == nil {
		return scope, scope != ""
	}
	left := identity.IntersectScopes(strings.Fields(scope), place.Scopes)
	return strings.Join(left, " "), len(left) > 0
}
