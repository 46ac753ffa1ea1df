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

	"github.com/spf13/cobra"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

func apikeyCmd(ctx context.Context, e *env) *cobra.Command {
	return group("apikey", "Create, list and revoke API keys", apikeyCreateCmd(ctx, e), apikeyListCmd(ctx, e), apikeyRevokeCmd(ctx, e))
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
	// AllowedNetworks: where the key may be used from; empty: anywhere.
	AllowedNetworks []string `json:"allowed_networks"`
	Secret          string   `json:"secret,omitempty"`
}

func toKeyJSON(k *apikey.Key) keyJSON {
	return keyJSON{
		ID: k.ID, Tenant: k.TenantKey, Name: k.Name, Role: k.Role, Scopes: k.Scopes,
		CreatedBy: k.CreatedBy, CreatedAt: k.CreatedAt, ExpiresAt: timePtr(k.ExpiresAt),
		LastUsedAt: timePtr(k.LastUsedAt), RevokedAt: timePtr(k.RevokedAt), AllowedNetworks: k.AllowedNetworks.Strings(),
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

// apikeyCreate are the flags of apikey create.
type apikeyCreate struct {
	tenant, role, name, scopes, expires string
	allowIP                             []string
	asJSON                              bool
}

func apikeyCreateCmd(ctx context.Context, e *env) *cobra.Command {
	var o apikeyCreate
	c := &cobra.Command{
		Use:   "create --tenant T --role R",
		Short: "Create an API key and print its secret once",
		Long: `Create an API key for a tenant (created if it does not exist) and print its
secret on stdout, once: it is stored hashed and cannot be shown again.`,
		Example: `  gatehouse apikey create --tenant acme.com --role admin
  gatehouse apikey create --tenant acme.com --role viewer --name dashboards --expires 90d --json
  gatehouse apikey create --tenant acme.com --role developer --name ci --allow-ip 10.0.0.0/8 --allow-ip 2001:db8::/32`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error { return o.run(ctx, e) },
	}
	f := c.Flags()
	f.StringVar(&o.tenant, "tenant", "", "tenant key, such as acme.com (created if it does not exist)")
	f.StringVar(&o.role, "role", "", "admin, developer or viewer")
	f.StringVar(&o.name, "name", "", "a name to recognise the key by")
	f.StringVar(&o.scopes, "scopes", "", "comma-separated scopes (default: all the role can use)")
	f.StringVar(&o.expires, "expires", "never", "lifetime: a duration (720h), days (90d) or never")
	f.StringArrayVar(&o.allowIP, "allow-ip", nil, "a network the key may be used from (10.0.0.0/8, 2001:db8::/32 or one address); repeat it or separate with commas, at most 64 (default: anywhere)")
	f.BoolVar(&o.asJSON, "json", false, "print the key as JSON, secret included")
	return c
}

func (o *apikeyCreate) run(ctx context.Context, e *env) error {
	tenant, role, name, scopes, expires, asJSON := &o.tenant, &o.role, &o.name, &o.scopes, &o.expires, &o.asJSON
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
	nets, problem := parseAllowIP(o.allowIP)
	if problem != "" {
		problems = append(problems, problem)
	}
	if len(problems) > 0 {
		return usagef("%s", strings.Join(problems, "; "))
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
		k.AllowedNetworks = nets
		if err := db.CreateAPIKey(ctx, k); err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "API key %s for tenant %s (role %s, scopes %s, usable from %s): the secret below is shown once\n",
			k.ID, t.Key, r, strings.Join(sc, " "), nets)
		if *asJSON {
			j := toKeyJSON(k)
			j.Secret = secret
			return printJSON(e.stdout, j)
		}
		_, err = fmt.Fprintln(e.stdout, secret)
		return err
	})
}

// parseAllowIP reads the --allow-ip values (each one network, or several
// separated by commas) or says what is wrong with them. A value with no
// network in it is refused rather than read as "anywhere": it is usually
// an unset shell variable, and must not lift the restriction it meant.
func parseAllowIP(values []string) (identity.Networks, string) {
	var entries []string
	for _, v := range values {
		parts := splitList(v)
		if len(parts) == 0 {
			return nil, "--allow-ip: an empty value; give a network such as 10.0.0.0/8 or an address (leave the flag out for a key usable from anywhere)"
		}
		entries = append(entries, parts...)
	}
	nets, err := identity.ParseNetworks(entries)
	if err != nil {
		return nil, "--allow-ip: " + strings.ReplaceAll(err.Error(), "\n", "; ")
	}
	return nets, ""
}

func osUser() string {
	for _, v := range []string{"USER", "LOGNAME"} {
		if u := os.Getenv(v); u != "" {
			return u
		}
	}
	return "unknown"
}

func apikeyListCmd(ctx context.Context, e *env) *cobra.Command {
	var tenant string
	var asJSON bool
	c := &cobra.Command{
		Use:   "list --tenant T",
		Short: "List a tenant's API keys (never their secrets)",
		Example: `  gatehouse apikey list --tenant acme.com
  gatehouse apikey list --tenant acme.com --json`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error { return apikeyList(ctx, e, tenant, asJSON) },
	}
	c.Flags().StringVar(&tenant, "tenant", "", "tenant key, such as acme.com")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON (one array)")
	return c
}

func apikeyList(ctx context.Context, e *env, tenant string, asJSON bool) error {
	key, err := tenancy.NormalizeKey(tenant)
	if tenant == "" {
		return usagef("--tenant is required (for example --tenant acme.com)")
	} else if err != nil {
		return usagef("--tenant: %w", err)
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
		if asJSON {
			out := make([]keyJSON, 0, len(keys))
			for _, k := range keys {
				out = append(out, toKeyJSON(k))
			}
			return printJSON(e.stdout, out)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tROLE\tSCOPES\tCREATED\tEXPIRES\tLAST USED\tREVOKED\tALLOWED NETWORKS")
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, orDash(k.Name), k.Role, strings.Join(k.Scopes, ","),
				formatTime(k.CreatedAt), formatTime(k.ExpiresAt), formatTime(k.LastUsedAt), formatTime(k.RevokedAt), k.AllowedNetworks)
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

func apikeyRevokeCmd(ctx context.Context, e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API key (every replica forgets it within a second)",
		Example: `  gatehouse apikey revoke 3kq7xw2mz5n4b6c8
  gatehouse apikey revoke 3kq7xw2mz5n4b6c8 --json`,
		Args: oneArg("the key's id (gatehouse apikey list shows them)"),
		RunE: func(_ *cobra.Command, args []string) error { return apikeyRevoke(ctx, e, args[0], asJSON) },
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the revoked key as JSON")
	return c
}

func apikeyRevoke(ctx context.Context, e *env, id string, asJSON bool) error {
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
		if asJSON {
			return printJSON(e.stdout, toKeyJSON(k))
		}
		_, err = fmt.Fprintf(e.stdout, "revoked %s (tenant %s, name %s, revoked at %s)\n", k.ID, k.TenantKey, orDash(k.Name), formatTime(k.RevokedAt))
		return err
	})
}
