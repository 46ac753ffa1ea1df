package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
	"github.com/gatehouse-mcp/gatehouse/internal/httpx"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// Tools runs MCP tools on the console's behalf: *mcp.Server implements it.
// Invoke authorizes (role × scope), runs the tool in the member's tenant
// transaction and audits it there with o.Via; a refusal or a failure meant
// for the person is an error with Denied() bool and RetryAfter()
// time.Duration (rate-limited) methods whose Error() is readable. Allows tells whether a role with scopes may call a tool.
type Tools interface {
	Invoke(ctx context.Context, p *identity.Principal, m *tenancy.Membership, o httpx.Origin, tool string, args any) (json.RawMessage, error)
	Allows(tool string, role tenancy.Role, scopes []string) bool
}

// Options configure the console.
type Options struct {
	PublicURL string // scheme://host[:port]
	DB        *store.DB
	Tenancy   *tenancy.Service
	// SignIn is the authorization server; its upstreams are the console's
	// sign-in providers. Without upstreams nobody can sign in.
	SignIn *authserver.Server
	Tools  Tools
	// RoleScopes are the scopes a member with a role can use (the
	// console's sessions carry exactly those; mcp.RoleScopes).
	RoleScopes func(tenancy.Role) []string
	// Operators are the provider-qualified subjects (google:1234) allowed
	// on /console/operator (GATEHOUSE_OPERATORS).
	Operators []string
	// VerifyAudit verifies a tenant's audit chain with the configured keys
	// (store.VerifyAudit); the result is stored as the tenant's checkpoint.
	VerifyAudit func(ctx context.Context, t *tenancy.Tenant) (*store.AuditReport, error)
	// Limiter shows usage against the limits and sets tenant limits; nil
	// means no rate limits.
	Limiter *tenancy.Limiter
	// IdleTimeout (default 30 minutes) and AbsoluteTimeout (default 12
	// hours) end sessions; FreshSignIn (default 10 minutes) is how recent
	// a sign-in must be for sensitive actions.
	IdleTimeout, AbsoluteTimeout, FreshSignIn time.Duration
	Logger                                    *slog.Logger
}

// Console serves the pages.
type Console struct {
	opts   Options
	log    *slog.Logger
	secure bool   // the public URL is https: __Host- cookie, Secure
	origin string // scheme://host[:port] of the public URL
}

// New checks the options and returns a Console; mount it with [Console.Mount].
func New(opts Options) (*Console, error) {
	var errs []error
	u, err := url.Parse(opts.PublicURL)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		errs = append(errs, fmt.Errorf("console: public URL %q must be an absolute http(s) URL", opts.PublicURL))
	}
	if opts.DB == nil || opts.Tenancy == nil || opts.SignIn == nil || opts.Tools == nil || opts.RoleScopes == nil {
		errs = append(errs, errors.New("console: DB, Tenancy, SignIn, Tools and RoleScopes are required"))
	}
	for _, op := range opts.Operators {
		if p, id, ok := strings.Cut(op, ":"); !ok || p == "" || id == "" {
			errs = append(errs, fmt.Errorf("console: operator %q must be provider:subject, such as github:5678", op))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 30 * time.Minute
	}
	if opts.AbsoluteTimeout <= 0 {
		opts.AbsoluteTimeout = 12 * time.Hour
	}
	if opts.FreshSignIn <= 0 {
		opts.FreshSignIn = 10 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Console{opts: opts, log: opts.Logger, secure: u.Scheme == "https", origin: u.Scheme + "://" + u.Host}
	opts.SignIn.SetFirstParty(c.signInFinish)
	return c, nil
}

// isOperator reports whether subject is named in Options.Operators. The
// subject is provider-qualified, so no other identity provider can assert
// its way in with the same number.
func (c *Console) isOperator(subject string) bool {
	return subject != "" && slices.Contains(c.opts.Operators, subject)
}

// MaintainSessions drops expired sessions; call it now and then.
func (c *Console) MaintainSessions(ctx context.Context) error {
	return c.opts.DB.DeleteExpiredConsoleSessions(ctx, c.opts.IdleTimeout)
}
