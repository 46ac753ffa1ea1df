package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

func cmdToken(ctx context.Context, args []string, e *env) error {
	if len(args) == 0 || args[0] != "mint" {
		return fmt.Errorf("%w: token mint --tenant T --subject S [--role R] [--scopes S,...] [--ttl 1h]", errUsage)
	}
	fs := newFlagSet("token mint", e)
	tenant := fs.String("tenant", "", "tenant key, such as acme.com (must exist: gatehouse tenant list)")
	subject := fs.String("subject", "", "who the token stands for, such as ci or alice (shown as dev:<subject>)")
	role := fs.String("role", string(tenancy.Developer), "admin, developer or viewer")
	scopes := fs.String("scopes", "", "comma-separated scopes (default: all the role can use)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime, at most 24h")
	asJSON := fs.Bool("json", false, "print the token and its details as JSON")
	if pos, err := parse(fs, args[1:]); err != nil {
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
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
		return fmt.Errorf("%w: %s", errUsage, strings.Join(problems, "; "))
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
