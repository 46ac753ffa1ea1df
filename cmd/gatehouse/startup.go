package main

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"time"
)

// readyNotes are what the start-up found that an operator should see
// without reading the log (an identity provider failing its check, a public
// URL left to its default): /readyz lists them in its detail.
type readyNotes struct {
	mu sync.Mutex
	m  map[string]string
}

func (n *readyNotes) set(key, note string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = map[string]string{}
	}
	n.m[key] = note
}

func (n *readyNotes) clear(key string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.m, key)
}

func (n *readyNotes) snapshot() map[string]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return maps.Clone(n.m)
}

// issuerCheck is an identity provider whose issuer can be checked now
// (oidc, google and auth0 verifiers: discovery document and JWKS).
type issuerCheck struct {
	provider string
	issuer   string
	check    func(context.Context) error
}

// issuerChecks lists the configured issuers to check at start.
func (ps *providers) issuerChecks() []issuerCheck {
	var cs []issuerCheck
	if ps.google != nil {
		v := ps.google.IDTokens()
		cs = append(cs, issuerCheck{"google", v.Issuer(), v.Check})
	}
	if ps.auth0 != nil {
		cs = append(cs, issuerCheck{"auth0", ps.auth0.Issuer(), ps.auth0.Check})
	}
	for _, v := range ps.oidc {
		cs = append(cs, issuerCheck{v.Name(), v.Issuer(), v.Check})
	}
	return cs
}

// issuerRecheck is how often an issuer that failed its check is tried again
// (its /readyz note clears once it passes).
const issuerRecheck = 30 * time.Second

// checkIssuers fetches every configured issuer's discovery document and
// keys, logging each outcome: which issuer failed and why (unreachable, an
// HTTP status, an issuer that differs from its discovery document, by a
// trailing slash or otherwise). Failures become /readyz notes and are
// retried until they pass or ctx ends. Tokens from a failing issuer are
// refused with 503 meanwhile; everything else works.
func checkIssuers(ctx context.Context, checks []issuerCheck, notes *readyNotes, log *slog.Logger) {
	var wg sync.WaitGroup
	for _, c := range checks {
		wg.Go(func() {
			key := "identity_provider_" + c.provider
			for failed := false; ; {
				cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				err := c.check(cctx)
				cancel()
				if ctx.Err() != nil {
					return
				}
				if err == nil {
					notes.clear(key)
					if failed {
						log.Info("identity provider's issuer passes its check now", "provider", c.provider, "issuer", c.issuer)
					} else {
						log.Info("identity provider's issuer checked", "provider", c.provider, "issuer", c.issuer)
					}
					return
				}
				if !failed {
					log.Error("identity provider's issuer failed its check: its tokens are refused until it passes (retried every 30s)",
						"provider", c.provider, "issuer", c.issuer, "error", err)
				}
				failed = true
				notes.set(key, "issuer "+c.issuer+" failed its check: "+err.Error())
				select {
				case <-ctx.Done():
					return
				case <-time.After(issuerRecheck):
				}
			}
		})
	}
	wg.Wait()
}

// reportPublicURL says where the public URL came from: a platform's own
// variable (logged, since a custom domain needs GATEHOUSE_PUBLIC_URL), or
// nowhere, which is right on a developer's machine and wrong in production
// (DATABASE_URL set): metadata and sign-in would name http://localhost.
func reportPublicURL(cfg *Config, log *slog.Logger) {
	switch cfg.PublicURLFrom {
	case "GATEHOUSE_PUBLIC_URL":
	case "":
		if cfg.DatabaseURL == "" {
			return // the embedded database: a developer's machine
		}
		msg := "GATEHOUSE_PUBLIC_URL is not set: clients are told this server is at " + cfg.PublicURL +
			" (OAuth metadata, sign-in redirects, the MCP resource); set GATEHOUSE_PUBLIC_URL to the URL clients use, such as https://mcp.example.com"
		log.Warn("WARNING: " + msg)
		cfg.notes.set("public_url", msg)
	default:
		log.Info("public URL taken from the platform: set GATEHOUSE_PUBLIC_URL for a custom domain",
			"public_url", cfg.PublicURL, "from", cfg.PublicURLFrom)
	}
}
