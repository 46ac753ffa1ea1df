package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

func cmdAPIKey(ctx context.Context, args []string, e *env) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: apikey needs a subcommand: create, list or revoke", errUsage)
	}
	switch args[0] {
	case "create":
		return cmdAPIKeyCreate(ctx, args[1:], e)
	case "list":
		return cmdAPIKeyList(ctx, args[1:], e)
	case "revoke":
		return cmdAPIKeyRevoke(ctx, args[1:], e)
	}
	return fmt.Errorf("%w: unknown apikey subcommand %q", errUsage, args[0])
}

// keyJSON is the --json form of a key.
type keyJSON struct {
	ID         string     `json:"id"`
	Tenant     string     `json:"tenant"`
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	Scopes     []string   `json:"scopes"`
	CreatedBy  string     `json:"created_by"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
	Secret     string     `json:"secret,omitempty"`
}

func toKeyJSON(k *apikey.Key) keyJSON {
	return keyJSON{
		ID: k.ID, Tenant: k.TenantKey, Name: k.Name, Role: k.Role, Scopes: k.Scopes,
		CreatedBy: k.CreatedBy, CreatedAt: k.CreatedAt, ExpiresAt: timePtr(k.ExpiresAt),
		LastUsedAt: timePtr(k.LastUsedAt), RevokedAt: timePtr(k.RevokedAt),
	}
}

// defaultScopes are the scopes a key gets for its role unless --scopes says.
func defaultScopes(r tenancy.Role) []string {
	switch r {
	case tenancy.Admin:
		return identity.AllScopes
	case tenancy.Developer:
		return []string{identity.ScopeRead, identity.ScopeWrite}
	}
	return []string{identity.ScopeRead}
}

func cmdAPIKeyCreate(ctx context.Context, args []string, e *env) error {
	fs := newFlagSet("apikey create", e)
	tenant := fs.String("tenant", "", "tenant key, such as acme.com (created if it does not exist)")
	role := fs.String("role", "", "admin, developer or viewer")
	name := fs.String("name", "", "a name to recognise the key by")
	scopes := fs.String("scopes", "", "comma-separated scopes (default: all the role can use)")
	expires := fs.String("expires", "never", "lifetime: a duration (720h), days (90d) or never")
	asJSON := fs.Bool("json", false, "print the key as JSON, secret included")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
	var problems []string
	key, err := tenancy.NormalizeKey(*tenant)
	if *tenant == "" {
		problems = append(problems, "--tenant is required (for example --tenant acme.com)")
	} else if err != nil {
		problems = append(problems, "--tenant: "+err.Error())
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
	exp, err := parseExpiry(*expires, time.Now())
	if err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", errUsage, strings.Join(problems, "; "))
	}
	return withDatabase(ctx, e, func(db *database, log *slog.Logger) error {
		t, created, err := db.EnsureTenant(ctx, key, tenancy.KindOf(key))
		if err != nil {
			return err
		}
		if created {
			fmt.Fprintf(e.stderr, "created tenant %s\n", t.Key)
		}
		secret, k := apikey.New(t.ID, string(r), sc, *name, "cli:"+osUser(), exp)
		if err := db.CreateAPIKey(ctx, k); err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "API key %s for tenant %s (role %s, scopes %s): the secret below is shown once\n", k.ID, t.Key, r, strings.Join(sc, " "))
		if *asJSON {
			j := toKeyJSON(k)
			j.Secret = secret
			return printJSON(e.stdout, j)
		}
		_, err = fmt.Fprintln(e.stdout, secret)
		return err
	})
}

func osUser() string {
	for _, v := range []string{"USER", "LOGNAME"} {
		if u := os.Getenv(v); u != "" {
			return u
		}
	}
	return "unknown"
}

func cmdAPIKeyList(ctx context.Context, args []string, e *env) error {
	fs := newFlagSet("apikey list", e)
	tenant := fs.String("tenant", "", "tenant key, such as acme.com")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	key, err := tenancy.NormalizeKey(*tenant)
	if err != nil {
		return fmt.Errorf("%w: --tenant: %w", errUsage, err)
	}
	return withDatabase(ctx, e, func(db *database, _ *slog.Logger) error {
		t, err := db.FindTenantByKey(ctx, key)
		if errors.Is(err, tenancy.ErrTenantNotFound) {
			return fmt.Errorf("no tenant %s (gatehouse tenant list shows them)", key)
		}
		if err != nil {
			return err
		}
		keys, err := db.FindAPIKeys(ctx, t.ID)
		if err != nil {
			return err
		}
		if *asJSON {
			out := make([]keyJSON, 0, len(keys))
			for _, k := range keys {
				out = append(out, toKeyJSON(k))
			}
			return printJSON(e.stdout, out)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tROLE\tSCOPES\tCREATED\tEXPIRES\tLAST USED\tREVOKED")
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, orDash(k.Name), k.Role, strings.Join(k.Scopes, ","),
				formatTime(k.CreatedAt), formatTime(k.ExpiresAt), formatTime(k.LastUsedAt), formatTime(k.RevokedAt))
		}
		return tw.Flush()
	})
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cmdAPIKeyRevoke(ctx context.Context, args []string, e *env) error {
	fs := newFlagSet("apikey revoke", e)
	asJSON := fs.Bool("json", false, "print the revoked key as JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: apikey revoke takes one key id (gatehouse apikey list shows them)", errUsage)
	}
	id := pos[0]
	if full, ok := apikey.ParseID(id); ok { // a whole secret was pasted: revoke it, never echo it
		id = full
	}
	return withDatabase(ctx, e, func(db *database, _ *slog.Logger) error {
		k, err := db.RevokeAPIKey(ctx, id)
		if errors.Is(err, apikey.ErrNotFound) {
			return fmt.Errorf("no API key with id %q", id)
		}
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(e.stdout, toKeyJSON(k))
		}
		_, err = fmt.Fprintf(e.stdout, "revoked %s (tenant %s, name %s, revoked at %s)\n", k.ID, k.TenantKey, orDash(k.Name), formatTime(k.RevokedAt))
		return err
	})
}
