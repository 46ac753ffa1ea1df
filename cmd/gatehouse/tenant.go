package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

func tenantCmd(ctx context.Context, e *env) *cobra.Command {
	limits := group("limits", "Show, set or clear a tenant's own rate limit",
		tenantLimitsCmd(ctx, e, "show"), tenantLimitsCmd(ctx, e, "set"), tenantLimitsCmd(ctx, e, "clear"))
	return group("tenant", "List and inspect tenants, set their rate limits, suspend, export and delete them",
		tenantListCmd(ctx, e), tenantShowCmd(ctx, e), limits,
		tenantStatusCmd(ctx, e, "suspend"), tenantStatusCmd(ctx, e, "resume"), tenantExportCmd(ctx, e), tenantDeleteCmd(ctx, e))
}

type tenantJSON struct {
	ID            string    `json:"id"`
	Key           string    `json:"key"`
	Kind          string    `json:"kind"`
	Status        string    `json:"status"`
	Schema        string    `json:"schema"`
	SchemaVersion int       `json:"schema_version"`
	CreatedAt     time.Time `json:"created_at"`
	APIKeys       *int      `json:"api_keys,omitempty"`
}

func toTenantJSON(t *tenancy.Tenant) tenantJSON {
	return tenantJSON{ID: t.ID, Key: t.Key, Kind: string(t.Kind), Status: string(t.Status),
		Schema: t.Schema, SchemaVersion: t.SchemaVersion, CreatedAt: t.CreatedAt}
}

func tenantListCmd(ctx context.Context, e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "list",
		Short: "List every tenant",
		Example: `  gatehouse tenant list
  gatehouse tenant list --json`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error { return tenantList(ctx, e, asJSON) },
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON (one array)")
	return c
}

func tenantList(ctx context.Context, e *env, asJSON bool) error {
	return withDatabase(ctx, e, func(db *database, _ *slog.Logger) error {
		ts, err := db.FindTenants(ctx)
		if err != nil {
			return err
		}
		if asJSON {
			out := make([]tenantJSON, 0, len(ts))
			for _, t := range ts {
				out = append(out, toTenantJSON(t))
			}
			return printJSON(e.stdout, out)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TENANT\tKIND\tSTATUS\tCREATED\tID")
		for _, t := range ts {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Key, t.Kind, t.Status, formatTime(t.CreatedAt), t.ID)
		}
		return tw.Flush()
	})
}

func tenantShowCmd(ctx context.Context, e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "show T",
		Short: "Show one tenant: kind, status, schema, API keys",
		Example: `  gatehouse tenant show acme.com
  gatehouse tenant show acme.com --json`,
		Args: oneArg("a tenant key, such as acme.com"),
		RunE: func(_ *cobra.Command, args []string) error { return tenantShow(ctx, e, args[0], asJSON) },
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func tenantShow(ctx context.Context, e *env, tenant string, asJSON bool) error {
	key, err := tenancy.NormalizeKey(tenant)
	if err != nil {
		return usagef("%w", err)
	}
	return withDatabase(ctx, e, func(db *database, _ *slog.Logger) error {
		t, err := db.FindTenantByKey(ctx, key)
		if errors.Is(err, tenancy.ErrTenantNotFound) {
			return fmt.Errorf("no tenant %s", key)
		}
		if err != nil {
			return err
		}
		keys, err := db.FindAPIKeys(ctx, t.ID)
		if err != nil {
			return err
		}
		j := toTenantJSON(t)
		n := len(keys)
		j.APIKeys = &n
		if asJSON {
			return printJSON(e.stdout, j)
		}
		fmt.Fprintf(e.stdout, "tenant:          %s\nid:              %s\nkind:            %s\nstatus:          %s\nschema:          %s (version %d)\ncreated:         %s\napi keys:        %d\n",
			j.Key, j.ID, j.Kind, j.Status, j.Schema, j.SchemaVersion, formatTime(j.CreatedAt), n)
		return nil
	})
}

// tenantLimits are the flags of tenant limits show|set|clear.
type tenantLimits struct {
	op     string
	rate   string
	burst  int
	asJSON bool
}

func tenantLimitsCmd(ctx context.Context, e *env, op string) *cobra.Command {
	o := &tenantLimits{op: op}
	c := &cobra.Command{
		Use:  op + " T",
		Args: oneArg("a tenant key, such as acme.com"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(ctx, e, args[0], cmd.Flags().Changed("burst"))
		},
	}
	switch op {
	case "show":
		c.Short = "Show the rate limit a tenant gets (its own, or the default)"
		c.Example = "  gatehouse tenant limits show acme.com\n  gatehouse tenant limits show acme.com --json"
	case "set":
		c.Use = "set T --rate R [--burst N]"
		c.Short = "Give a tenant its own rate limit (or none: --rate off)"
		c.Long = `Give a tenant its own rate limit, instead of GATEHOUSE_TENANT_RATE and
GATEHOUSE_TENANT_BURST. --rate takes what GATEHOUSE_TENANT_RATE takes: a number
per second, minute or hour (10/s, 600/m, 3600/h) or off (no limit for this
tenant). --burst, how many requests are admitted at once, defaults to
GATEHOUSE_TENANT_BURST (200 unless set).`
		c.Example = "  gatehouse tenant limits set acme.com --rate 600/m --burst 60\n  gatehouse tenant limits set acme.com --rate 3600/h\n  gatehouse tenant limits set partner.example --rate off"
		c.Flags().StringVar(&o.rate, "rate", "", "requests per period: 10/s, 600/m, 3600/h, or off for no limit")
		c.Flags().IntVar(&o.burst, "burst", 0, "requests admitted at once (default: GATEHOUSE_TENANT_BURST, 200 unless set)")
	case "clear":
		c.Short = "Remove a tenant's own rate limit (it gets the default again)"
		c.Example = "  gatehouse tenant limits clear acme.com"
	}
	c.Flags().BoolVar(&o.asJSON, "json", false, "print JSON")
	return c
}

// run shows, sets or clears a tenant's own rate limit.
func (o *tenantLimits) run(ctx context.Context, e *env, tenant string, burstGiven bool) error {
	key, err := tenancy.NormalizeKey(tenant)
	if err != nil {
		return usagef("%w", err)
	}
	cfg, _, err := setup(e)
	if err != nil {
		return err
	}
	var r *tenancy.Rate
	if o.op == "set" {
		if o.rate == "" {
			return usagef("--rate is required (such as --rate 600/m, or --rate off for no limit)")
		}
		burst := max(cfg.Limits.Tenant.Burst, 1) // GATEHOUSE_TENANT_RATE=off leaves no default burst
		if burstGiven {
			burst = o.burst
		}
		parsed, err := tenancy.ParseRate(o.rate, burst)
		if err != nil {
			return usagef("--rate/--burst: %w", err)
		}
		r = &parsed
	}
	return withDatabase(ctx, e, func(db *database, _ *slog.Logger) error {
		t, err := db.FindTenantByKey(ctx, key)
		if errors.Is(err, tenancy.ErrTenantNotFound) {
			return fmt.Errorf("no tenant %s", key)
		}
		if err != nil {
			return err
		}
		if o.op != "show" {
			if err := db.SetTenantRateLimit(ctx, t.ID, r); err != nil {
				return err
			}
			t.RateLimit = r
		}
		effective, source := cfg.Limits.Tenant, "default"
		if t.RateLimit != nil {
			effective, source = *t.RateLimit, "tenant override"
		}
		if o.asJSON {
			return printJSON(e.stdout, map[string]any{"tenant": t.Key, "rate": effective.String(), "off": effective.Off(),
				"per_minute": effective.PerMinute, "burst": effective.Burst, "source": source, "principal": cfg.Limits.Principal.String()})
		}
		_, err = fmt.Fprintf(e.stdout, "tenant %s: %s (%s); each principal: %s\n", t.Key, effective, source, cfg.Limits.Principal)
		return err
	})
}
