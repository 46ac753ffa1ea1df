package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// auditKeys are the keys of GATEHOUSE_AUDIT_KEY, newest first (several
// while rotating it: the first chains, all verify), or else a random key
// kept in the database, which log (nil: say nothing) warns about. Only a key kept outside the database makes the
// chain evidence against someone who can write to the database.
func auditKeys(ctx context.Context, db *database, cfg *Config, log *slog.Logger) ([]store.AuditKey, error) {
	var keys []store.AuditKey
	for _, k := range cfg.AuditKeys {
		keys = append(keys, store.NewAuditKey(k))
	}
	if len(keys) > 0 {
		return keys, nil
	}
	secret, err := db.Secret(ctx, "audit-key")
	if err != nil {
		return nil, err
	}
	if log == nil { // a CLI command: the server says it
		return []store.AuditKey{store.NewAuditKey(secret)}, nil
	}
	log.Warn("GATEHOUSE_AUDIT_KEY is not set: the audit chain is keyed with a secret kept in the database, " +
		"so it shows tampering by anyone who cannot read that secret; set GATEHOUSE_AUDIT_KEY to make it evidence against database administrators too")
	return []store.AuditKey{store.NewAuditKey(secret)}, nil
}

func auditCmd(ctx context.Context, e *env) *cobra.Command {
	return group("audit", "Verify and read a tenant's audit log", auditVerifyCmd(ctx, e), auditTailCmd(ctx, e))
}

func auditVerifyCmd(ctx context.Context, e *env) *cobra.Command {
	var tenant string
	var asJSON bool
	c := &cobra.Command{
		Use:   "verify --tenant T",
		Short: "Check a tenant's audit hash chain (exit 1 on a break)",
		Long: `Chain the tenant's pending audit records, then walk the hash chain with the
keys of GATEHOUSE_AUDIT_KEY (newest first) and report the first record that was
edited, deleted, inserted or reordered, or cut off the end: TAMPERED, exit 1.
Records chained with a key that is not configured cannot be checked here:
UNVERIFIABLE, exit 1. Records the tenant's audit log refused, kept out of the
chain in the audit intake until the log is repaired: INCOMPLETE, exit 1. An
intact chain holding every record: ok, exit 0.`,
		Example: `  gatehouse audit verify --tenant acme.com
  GATEHOUSE_AUDIT_KEY=<new>,<old> gatehouse audit verify --tenant acme.com --json`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error { return auditVerify(ctx, e, tenant, asJSON) },
	}
	c.Flags().StringVar(&tenant, "tenant", "", "tenant key, such as acme.com")
	c.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return c
}

func auditTailCmd(ctx context.Context, e *env) *cobra.Command {
	var tenant string
	var n int
	var asJSON bool
	c := &cobra.Command{
		Use:   "tail --tenant T [-n 20]",
		Short: "Print a tenant's latest audit records, oldest first",
		Example: `  gatehouse audit tail --tenant acme.com
  gatehouse audit tail --tenant acme.com -n 100 --json | jq .decision`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error {
			if n < 1 {
				return usagef("-n %d: want 1 or more records", n)
			}
			key, err := tenantFlag(tenant)
			if err != nil {
				return err
			}
			return withDatabase(ctx, e, func(db *database, _ *slog.Logger) error {
				t, err := findTenant(ctx, db, key)
				if err != nil {
					return err
				}
				return auditTail(ctx, db, t, n, asJSON, e)
			})
		},
	}
	c.Flags().StringVar(&tenant, "tenant", "", "tenant key, such as acme.com")
	c.Flags().IntVarP(&n, "lines", "n", 20, "how many records")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON lines: one record per line")
	return c
}

// tenantFlag checks a required --tenant.
func tenantFlag(tenant string) (string, error) {
	if tenant == "" {
		return "", usagef("--tenant is required (for example --tenant acme.com)")
	}
	key, err := tenancy.NormalizeKey(tenant)
	if err != nil {
		return "", usagef("--tenant: %w", err)
	}
	return key, nil
}

func findTenant(ctx context.Context, db *database, key string) (*tenancy.Tenant, error) {
	t, err := db.FindTenantByKey(ctx, key)
	if errors.Is(err, tenancy.ErrTenantNotFound) {
		return nil, fmt.Errorf("no tenant %s (gatehouse tenant list shows them)", key)
	}
	return t, err
}

func auditVerify(ctx context.Context, e *env, tenant string, asJSON bool) error {
	key, err := tenantFlag(tenant)
	if err != nil {
		return err
	}
	return withConfigAndDatabase(ctx, e, func(cfg *Config, db *database, log *slog.Logger) error {
		t, err := findTenant(ctx, db, key)
		if err != nil {
			return err
		}
		keys, err := auditKeys(ctx, db, cfg, nil)
		if err != nil {
			return err
		}
		// Chain what is pending first (with the newest key, as the servers
		// do), so the report covers every record. A chain pass waits at
		// most a moment for a lock (store: backgroundLockWait); verify
		// waits for as long as the audit log stays locked, saying so.
		for told := false; ; {
			_, err := db.ChainAudit(ctx, t, keys[0], 100_000)
			if !errors.Is(err, store.ErrAuditLogBusy) {
				if err != nil {
					return err
				}
				break
			}
			if !told {
				fmt.Fprintf(e.stderr, "waiting: the audit log of %s is locked by another session (a migration or maintenance)\n", t.Key)
				told = true
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
		}
		rep, err := db.VerifyAudit(ctx, t, keys...)
		if err != nil {
			return err
		}
		// The console's audit page shows the last verification. One that
		// could not check the chain here (a key not configured) says
		// nothing about it, and is not stored.
		if rep.UnknownKey == "" {
			if err := db.SaveAuditCheckpoint(ctx, t, rep); err != nil {
				log.Warn("the verification could not be stored for the console's audit page", "error", err)
			}
		}
		var spans []string
		for _, k := range rep.Keys {
			spans = append(spans, fmt.Sprintf("records %d–%d with key %s", k.First, k.Last, k.KeyID))
		}
		if asJSON {
			if err := printJSON(e.stdout, map[string]any{"tenant": t.Key, "ok": rep.OK(), "complete": rep.Refused == 0, "verified": rep.Verified,
				"pending": rep.Pending, "refused": rep.Refused, "problem": rep.Problem, "seq": rep.Seq, "id": rep.ID, "keys": rep.Keys,
				"unverifiable": rep.UnknownKey != "", "unknown_key_id": rep.UnknownKey}); err != nil {
				return err
			}
		} else if rep.OK() {
			fmt.Fprintf(e.stdout, "ok: the audit log of %s is intact (%d records verified)\n", t.Key, rep.Verified)
			if len(rep.Keys) > 1 {
				fmt.Fprintf(e.stdout, "chained with %d keys: %s\n", len(rep.Keys), strings.Join(spans, ", "))
			}
		} else if rep.UnknownKey != "" {
			fmt.Fprintf(e.stdout, "UNVERIFIABLE: the audit log of %s cannot be checked here (%d records verified before it): %s\n", t.Key, rep.Verified, rep.Problem)
		} else {
			fmt.Fprintf(e.stdout, "TAMPERED: the audit log of %s is not intact: %s\n", t.Key, rep.Problem)
		}
		// Records the log refused are outside the chain: the log is not
		// the whole record of the tenant's calls until an operator repairs
		// it, so this too exits 1, for the schedules that alert on it.
		if rep.Refused > 0 && !asJSON {
			fmt.Fprintf(e.stdout, "INCOMPLETE: %d audit records of %s were refused by its audit log and are kept, unchained, in gatehouse.audit_intake (docs/operations.md, \"Audit records refused by a tenant's log\")\n", rep.Refused, t.Key)
		}
		if !rep.OK() || rep.Refused > 0 {
			return errTampered
		}
		return nil
	})
}

// errTampered is verify's failure (exit status 1, the report on stdout):
// a chain not intact, unverifiable here, or records kept out of it.
var errTampered = errors.New("audit verification failed")

func auditTail(ctx context.Context, db *database, t *tenancy.Tenant, n int, asJSON bool, e *env) error {
	// Records still in the audit intake are moved into the log first, so
	// the last n are the last committed.
	if err := db.SettleAudit(ctx, t); err != nil {
		return err
	}
	var recs []*store.AuditRecord
	err := db.WithTenant(ctx, t, func(tx pgx.Tx) error {
		var err error
		recs, _, err = store.FindAudit(ctx, tx, store.AuditFilter{Limit: max(1, n)})
		return err
	})
	if err != nil {
		return err
	}
	enc := json.NewEncoder(e.stdout)
	for i := len(recs) - 1; i >= 0; i-- { // oldest first, like tail
		r := recs[i]
		if asJSON {
			if err := enc.Encode(r); err != nil { // JSON lines: one compact record per line
				return err
			}
			continue
		}
		line := fmt.Sprintf("%s %-12s %-16s %s", r.At.UTC().Format(time.RFC3339), r.Decision, orDash(r.Tool), r.Subject)
		if r.Count > 1 {
			line += fmt.Sprintf(" x%d", r.Count)
		}
		if r.Reason != "" {
			line += " (" + r.Reason + ")"
		}
		fmt.Fprintln(e.stdout, strings.TrimRight(line, " "))
	}
	return nil
}
