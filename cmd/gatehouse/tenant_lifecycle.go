package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"

	"github.com/spf13/cobra"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// The tenant lifecycle on the command line: the same steps, and the same
// operator record, as the console's operator pages.

// cliOperator names the person at the shell in the operator record.
func cliOperator() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "cli:" + u.Username
	}
	return "cli:unknown"
}

// tenantKey normalises the tenant key a lifecycle command was given.
func tenantKey(arg string) (string, error) {
	key, err := tenancy.NormalizeKey(arg)
	if err != nil {
		return "", usagef("%w", err)
	}
	return key, nil
}

// tenantStatusCmd is tenant suspend (every request refused with 403,
// nothing deleted; on every running server within a second) or resume.
func tenantStatusCmd(ctx context.Context, e *env, op string) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:     op + " T",
		Args:    oneArg("a tenant key, such as acme.com"),
		Example: "  gatehouse tenant " + op + " acme.com",
		RunE: func(_ *cobra.Command, args []string) error {
			return tenantSetStatus(ctx, e, op, args[0], asJSON)
		},
	}
	if op == "suspend" {
		c.Short = "Suspend a tenant: every request of its members and keys is refused (403), nothing is deleted"
	} else {
		c.Short = "Resume a suspended tenant"
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func tenantSetStatus(ctx context.Context, e *env, op, arg string, asJSON bool) error {
	key, err := tenantKey(arg)
	if err != nil {
		return err
	}
	status := map[string]tenancy.Status{"suspend": tenancy.Suspended, "resume": tenancy.Active}[op]
	return withDatabase(ctx, e, func(db *database, _ *slog.Logger) error {
		t, err := findTenant(ctx, db, key)
		if err != nil {
			return err
		}
		if err := db.SetTenantStatus(ctx, t, status, store.OperatorAction{Operator: cliOperator(), Action: op, Via: "cli"}); err != nil {
			return err
		}
		t.Status = status
		if asJSON {
			return printJSON(e.stdout, toTenantJSON(t))
		}
		_, err = fmt.Fprintf(e.stdout, "tenant %s is %s\n", t.Key, status)
		return err
	})
}

// tenantExportCmd writes a tenant's archive (zip: tenant.json,
// members.jsonl, api_keys.jsonl without secrets, audit_log.jsonl and one
// file per workspace table) to --out or stdout.
func tenantExportCmd(ctx context.Context, e *env) *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "export T [--out FILE]",
		Short: "Export a tenant as a zip of JSON lines: workspace, members, keys (no secrets), audit log",
		Example: `  gatehouse tenant export acme.com --out acme.com.zip
  gatehouse tenant export acme.com > acme.com.zip`,
		Args: oneArg("a tenant key, such as acme.com"),
		RunE: func(_ *cobra.Command, args []string) error { return tenantExport(ctx, e, args[0], out) },
	}
	c.Flags().StringVar(&out, "out", "", "write the archive to this new file (default: stdout, which must not be a terminal)")
	return c
}

func tenantExport(ctx context.Context, e *env, arg, out string) error {
	key, err := tenantKey(arg)
	if err != nil {
		return err
	}
	if out == "" && e.stdoutTTY {
		return usagef("the archive is binary: give --out FILE or redirect stdout")
	}
	return withDatabase(ctx, e, func(db *database, log *slog.Logger) error {
		t, err := findTenant(ctx, db, key)
		if err != nil {
			return err
		}
		var w io.Writer = e.stdout
		if out != "" {
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			defer f.Close()
			w = f
		}
		if err := db.ExportTenant(ctx, t, w, store.OperatorAction{Operator: cliOperator(), Action: "export", Via: "cli"}); err != nil {
			return err
		}
		if out != "" {
			log.Info("tenant exported", "tenant", t.Key, "file", out)
		}
		return nil
	})
}

// tenantDeleteCmd deletes a tenant for good (schema, roles, members,
// keys), once --confirm repeats its key.
func tenantDeleteCmd(ctx context.Context, e *env) *cobra.Command {
	var confirm string
	c := &cobra.Command{
		Use:     "delete T --confirm T",
		Short:   "Delete a tenant for good: its schema, database roles, members and keys (export it first)",
		Example: "  gatehouse tenant delete acme.com --confirm acme.com",
		Args:    oneArg("a tenant key, such as acme.com"),
		RunE:    func(_ *cobra.Command, args []string) error { return tenantDelete(ctx, e, args[0], confirm) },
	}
	c.Flags().StringVar(&confirm, "confirm", "", "the tenant's key again, to confirm the deletion")
	return c
}

func tenantDelete(ctx context.Context, e *env, arg, confirm string) error {
	key, err := tenantKey(arg)
	if err != nil {
		return err
	}
	if confirm != key {
		return usagef("deleting %s removes its schema, roles, members and keys for good (export it first); confirm with --confirm %s", key, key)
	}
	return withDatabase(ctx, e, func(db *database, _ *slog.Logger) error {
		t, err := findTenant(ctx, db, key)
		if err != nil {
			return err
		}
		if err := db.DeleteTenant(ctx, t, store.OperatorAction{Operator: cliOperator(), Action: "delete", Via: "cli"}); err != nil {
			return err
		}
		_, err = fmt.Fprintf(e.stdout, "tenant %s deleted\n", t.Key)
		return err
	})
}
