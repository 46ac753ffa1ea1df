package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

func tokenCmd(ctx context.Context, e *env) *cobra.Command {
	return group("token", "Mint developer access tokens (local development only)", tokenMintCmd(ctx, e))
}

// tokenMint are the flags of token mint.
type tokenMint struct {
	tenant, subject, role, scopes string
	ttl                           time.Duration
	asJSON                        bool
}

func tokenMintCmd(ctx context.Context, e *env) *cobra.Command {
	o := &tokenMint{}
	c := &cobra.Command{
		Use:   "mint --tenant T --subject S",
		Short: "Mint a Gatehouse access token for local development",
		Long: `Mint an access token signed by Gatehouse for a made-up person (dev:<subject>)
in an existing tenant, bypassing sign-in and membership: for a developer's own
machine only (the embedded database, or GATEHOUSE_DEV=true). The token is for
the server at the public URL resolved as serve resolves it, or, when this shell
sets none, the URL the server on this database last started with; stderr says
which.`,
		Example: `  gatehouse token mint --tenant dev --subject alice
  gatehouse token mint --tenant dev --subject ci --role viewer --ttl 15m --json`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error { return o.run(ctx, e) },
	}
	f := c.Flags()
	f.StringVar(&o.tenant, "tenant", "", "tenant key, such as acme.com (must exist: gatehouse tenant list)")
	f.StringVar(&o.subject, "subject", "", "who the token stands for, such as ci or alice (shown as dev:<subject>)")
	f.StringVar(&o.role, "role", string(tenancy.Developer), "admin, developer or viewer")
	f.StringVar(&o.scopes, "scopes", "", "comma-separated scopes (default: all the role can use)")
	f.DurationVar(&o.ttl, "ttl", time.Hour, "lifetime, at most 24h")
	f.BoolVar(&o.asJSON, "json", false, "print the token and its details as JSON")
	return c
}

func (o *tokenMint) run(ctx context.Context, e *env) error {
	tenant, subject, role, scopes, ttl, asJSON := &o.tenant, &o.subject, &o.role, &o.scopes, &o.ttl, &o.asJSON
	var problems []string
	key, err := tenancy.NormalizeKey(*tenant)
	if *tenant == "" {
		problems = append(problems, "--tenant is required (for example --tenant dev)")
	} else if err != nil {
		problems = append(problems, "--tenant: "+err.Error())
	}
	if *subject == "" || strings.ContainsAny(*subject, " :") {
		problems = append(problems, "--subject is required, without spaces or ':' (for example --subject ci)")
	}
	r, err := tenancy.ParseRole(*role)
	if err != nil {
		problems = append(problems, "--role: "+err.Error())
	}
	sc := defaultScopes(r)
	if *scopes != "" {
		sc = splitList(*scopes)
		for _, s := range sc {
			if !slices.Contains(identity.AllScopes, s) {
				problems = append(problems, fmt.Sprintf("--scopes: unknown scope %q (want %s)", s, strings.Join(identity.AllScopes, ", ")))
			}
		}
	}
	if *ttl <= 0 || *ttl > 24*time.Hour {
		problems = append(problems, fmt.Sprintf("--ttl %s: a developer token lives between 1s and 24h", *ttl))
	}
	if len(problems) > 0 {
		return usagef("%s", strings.Join(problems, "; "))
	}
	return withConfigAndDatabase(ctx, e, func(cfg *Config, db *database, log *slog.Logger) error {
		// A developer token bypasses sign-in and membership: it is for a
		// developer's own machine, never for a shared deployment.
		if !cfg.Dev && db.embedded == nil {
			return errors.New("token mint is refused: it is for local development (the embedded database, or GATEHOUSE_DEV=true on a development server); on a shared deployment create an API key instead (gatehouse apikey create)")
		}
		t, err := db.FindTenantByKey(ctx, key)
		if errors.Is(err, tenancy.ErrTenantNotFound) {
			return fmt.Errorf("no tenant %s (gatehouse tenant list shows them; gatehouse apikey create --tenant %s creates one)", key, key)
		} else if err != nil {
			return err
		}
		keys, err := signingKeys(ctx, cfg, db, log)
		if err != nil {
			return err
		}
		issuer, from, err := tokenIssuer(ctx, cfg, db)
		if err != nil {
			return err
		}
		as, err := authserver.New(authserver.Config{Issuer: issuer, Store: db.DB, Keys: keys})
		if err != nil {
			return err
		}
		token, err := as.MintDeveloperToken(*subject, t.ID, string(r), strings.Join(sc, " "), *ttl)
		if err != nil {
			return err
		}
		expires := time.Now().Add(*ttl).UTC().Truncate(time.Second)
		fmt.Fprintf(e.stderr, "developer token for dev:%s in %s (role %s, scopes %s), for the server at %s/mcp (%s), until %s\n",
			*subject, t.Key, r, strings.Join(sc, " "), issuer, from, expires.Format(time.RFC3339))
		if *asJSON {
			return printJSON(e.stdout, map[string]any{"token": token, "subject": "dev:" + *subject, "tenant": t.Key,
				"role": r, "scopes": sc, "expires_at": expires, "resource": issuer + "/mcp"})
		}
		_, err = fmt.Fprintln(e.stdout, token)
		return err
	})
}

// tokenIssuer is the public URL a developer token is minted for, resolved
// as serve resolves it (GATEHOUSE_PUBLIC_URL, the platform's URL, then
// GATEHOUSE_ADDR or PORT), and, when this shell sets none of them, the URL
// the last server on this database started with: a token is only accepted
// by the server whose URL is its issuer. from says which, for the message.
func tokenIssuer(ctx context.Context, cfg *Config, db *database) (url, from string, err error) {
	switch {
	case cfg.PublicURLFrom != "":
		return cfg.PublicURL, "from " + cfg.PublicURLFrom, nil
	case cfg.AddrFrom != "":
		return cfg.PublicURL, "from " + cfg.AddrFrom, nil
	}
	served, err := db.ServedURL(ctx)
	if err != nil {
		return "", "", err
	}
	if served != "" {
		return served, "the URL the server on this database last started with; set GATEHOUSE_PUBLIC_URL or PORT to choose", nil
	}
	return cfg.PublicURL, "the default; no server has started on this database yet", nil
}
