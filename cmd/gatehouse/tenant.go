package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

func cmdTenant(ctx context.Context, args []string, e *env) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: tenant needs a subcommand: list, show, limits, suspend, resume, export or delete", errUsage)
	}
	switch args[0] {
	case "suspend", "resume":
		return cmdTenantStatus(ctx, args[0], args[1:], e)
	case "export":
		return cmdTenantExport(ctx, args[1:], e)
	case "delete":
		return cmdTenantDelete(ctx, args[1:], e)
	case "list":
		return cmdTenantList(ctx, args[1:], e)
	case "show":
		return cmdTenantShow(ctx, args[1:], e)
	case "limits":
		return cmdTenantLimits(ctx, args[1:], e)
	}
	return fmt.Errorf("%w: unknown tenant subcommand %q", errUsage, args[0])
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

func cmdTenantList(ctx context.Context, args []string, e *env) error {
	fs := newFlagSet("tenant list", e)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	return withDatabase(ctx, e, func(db *database, _ *slog.Logger) error {
		ts, err := db.FindTenants(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
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

func cmdTenantShow(ctx context.Context, args []string, e *env) error {
	fs := newFlagSet("tenant show", e)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: tenant show takes one tenant key, such as acme.com", errUsage)
	}
	key, err := tenancy.NormalizeKey(pos[0])
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
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
		if *asJSON {
			return printJSON(e.stdout, j)
		}
		fmt.Fprintf(e.stdout, "tenant:          %s\nid:              %s\nkind:            %s\nstatus:          %s\nschema:          %s (version %d)\ncreated:         %s\napi keys:        %d\n",
			j.Key, j.ID, j.Kind, j.Status, j.Schema, j.SchemaVersion, formatTime(j.CreatedAt), n)
		return nil
	})
}

// cmdTenantLimits shows, sets or clears a tenant's own rate limit.
func cmdTenantLimits(ctx context.Context, args []string, e *env) error {
	if len(args) == 0 || (args[0] != "show" && args[0] != "set" && args[0] != "clear") {
		return fmt.Errorf("%w: tenant limits show|set|clear T [--rate 600/m --burst 60]", errUsage)
	}
	op := args[0]
	fs := newFlagSet("tenant limits "+op, e)
	rate := fs.String("rate", "", "requests per period: 600/m, 10/s or 3600/h")
	burst := fs.Int("burst", 0, "requests admitted at once (default: one second's worth)")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: tenant limits %s takes one tenant key", errUsage, op)
	}
	key, err := tenancy.NormalizeKey(pos[0])
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	var r *tenancy.Rate
	if op == "set" {
		parsed, err := tenancy.ParseRate(*rate, *burst)
		if err != nil || parsed.Off() {
			return fmt.Errorf("%w: --rate: want a rate such as 600/m (clear removes the override)", errUsage)
		}
		r = &parsed
	}
	cfg, _, err := setup(e)
	if err != nil {
		return err
	}
	return withDatabase(ctx, e, func(db *database, _ *slog.Logger) error {
		t, err := db.FindTenantByKey(ctx, key)
		if errors.Is(err, tenancy.ErrTenantNotFound) {
			return fmt.Errorf("no tenant %s", key)
		}
		if err != nil {
			return err
		}
		if op != "show" {
			if err := db.SetTenantRateLimit(ctx, t.ID, r); err != nil {
				return err
			}
			t.RateLimit = r
		}
		effective, source := cfg.Limits.Tenant, "default"
		if t.RateLimit != nil {
			effective, source = *t.RateLimit, "tenant override"
		}
		if *asJSON {
			return printJSON(e.stdout, map[string]any{"tenant": t.Key, "per_minute": effective.PerMinute, "burst": effective.Burst,
				"source": source, "principal": cfg.Limits.Principal.String()})
		}
		_, err = fmt.Fprintf(e.stdout, "tenant %s: %s (%s); each principal: %s\n", t.Key, effective, source, cfg.Limits.Principal)
		return err
	})
}
