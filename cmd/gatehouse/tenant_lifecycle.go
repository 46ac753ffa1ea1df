package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"

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

// tenantArg parses the one tenant key a lifecycle command takes.
func tenantArg(name string, pos []string) (string, error) {
	if len(pos) != 1 {
		return "", fmt.Errorf("%w: tenant %s takes one tenant key, such as acme.com", errUsage, name)
	}
	key, err := tenancy.NormalizeKey(pos[0])
	if err != nil {
		return "", fmt.Errorf("%w: %w", errUsage, err)
	}
	return key, nil
}

func findTenant(ctx context.Context, db *database, key string) (*tenancy.Tenant, error) {
	t, err := db.FindTenantByKey(ctx, key)
	if errors.Is(err, tenancy.ErrTenantNotFound) {
		return nil, fmt.Errorf("no tenant %s", key)
	}
	return t, err
}

// cmdTenantStatus suspends a tenant (every request refused with 403,
// nothing deleted; on every running server within a second) or resumes it.
func cmdTenantStatus(ctx context.Context, op string, args []string, e *env) error {
	fs := newFlagSet("tenant "+op, e)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	key, err := tenantArg(op, pos)
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
		if *asJSON {
			return printJSON(e.stdout, toTenantJSON(t))
		}
		_, err = fmt.Fprintf(e.stdout, "tenant %s is %s\n", t.Key, status)
		return err
	})
}

// cmdTenantExport writes a tenant's archive (zip: tenant.json,
// members.jsonl, api_keys.jsonl without secrets, audit_log.jsonl and one
// file per workspace table) to --out or stdout.
func cmdTenantExport(ctx context.Context, args []string, e *env) error {
	fs := newFlagSet("tenant export", e)
	out := fs.String("out", "", "write the archive here (default: stdout, which must not be a terminal)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	key, err := tenantArg("export", pos)
	if err != nil {
		return err
	}
	var w io.Writer = e.stdout
	if *out == "" && e.stdoutTTY {
		return fmt.Errorf("%w: the archive is binary: give --out FILE or redirect stdout", errUsage)
	}
	return withDatabase(ctx, e, func(db *database, log *slog.Logger) error {
		t, err := findTenant(ctx, db, key)
		if err != nil {
			return err
		}
		if *out != "" {
			f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			defer f.Close()
			w = f
		}
		if err := db.ExportTenant(ctx, t, w, store.OperatorAction{Operator: cliOperator(), Action: "export", Via: "cli"}); err != nil {
			return err
		}
		if *out != "" {
			log.Info("tenant exported", "tenant", t.Key, "file", *out)
		}
		return nil
	})
}

// cmdTenantDelete deletes a tenant for good (schema, roles, members,
// keys), once --confirm repeats its key.
func cmdTenantDelete(ctx context.Context, args []string, e *env) error {
	fs := newFlagSet("tenant delete", e)
	confirm := fs.String("confirm", "", "the tenant's key again, to confirm the deletion")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	key, err := tenantArg("delete", pos)
	if err != nil {
		return err
	}
	if *confirm != key {
		return fmt.Errorf("%w: deleting %s removes its schema, roles, members and keys for good (export it first); confirm with --confirm %s", errUsage, key, key)
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
