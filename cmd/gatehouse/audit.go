package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// auditKeys are the keys of GATEHOUSE_AUDIT_KEY, newest first (several
// while rotating it: the first chains, all verify), or else a random key
// kept in the database. Only a key kept outside the database makes the
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
	log.Warn("GATEHOUSE_AUDIT_KEY is not set: the audit chain is keyed with a secret kept in the database, " +
		"so it shows tampering by anyone who cannot read that secret; set GATEHOUSE_AUDIT_KEY to make it evidence against database administrators too")
	return []store.AuditKey{store.NewAuditKey(secret)}, nil
}

func cmdAudit(ctx context.Context, args []string, e *env) error {
	if len(args) == 0 || (args[0] != "verify" && args[0] != "tail") {
		return fmt.Errorf("%w: audit verify|tail --tenant T", errUsage)
	}
	op := args[0]
	fs := newFlagSet("audit "+op, e)
	tenant := fs.String("tenant", "", "tenant key, such as acme.com")
	n := fs.Int("n", 20, "tail: how many records")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, args[1:]); err != nil {
		return err
	}
	key, err := tenancy.NormalizeKey(*tenant)
	if err != nil {
		return fmt.Errorf("%w: --tenant: %w", errUsage, err)
	}
	return withConfigAndDatabase(ctx, e, func(cfg *Config, db *database, log *slog.Logger) error {
		t, err := db.FindTenantByKey(ctx, key)
		if errors.Is(err, tenancy.ErrTenantNotFound) {
			return fmt.Errorf("no tenant %s", key)
		}
		if err != nil {
			return err
		}
		if op == "tail" {
			return auditTail(ctx, db, t, *n, *asJSON, e)
		}
		keys, err := auditKeys(ctx, db, cfg, log)
		if err != nil {
			return err
		}
		// Chain what is pending first (with the newest key, as the servers
		// do), so the report covers every record.
		if _, err := db.ChainAudit(ctx, t, keys[0], 100_000); err != nil {
			return err
		}
		rep, err := db.VerifyAudit(ctx, t, keys...)
		if err != nil {
			return err
		}
		var spans []string
		for _, k := range rep.Keys {
			spans = append(spans, fmt.Sprintf("records %d–%d with key %s", k.First, k.Last, k.KeyID))
		}
		if *asJSON {
			if err := printJSON(e.stdout, map[string]any{"tenant": t.Key, "ok": rep.OK(), "verified": rep.Verified,
				"pending": rep.Pending, "problem": rep.Problem, "seq": rep.Seq, "id": rep.ID, "keys": rep.Keys,
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
		if !rep.OK() {
			return errTampered
		}
		return nil
	})
}

var errTampered = errors.New("audit verification failed")

func auditTail(ctx context.Context, db *database, t *tenancy.Tenant, n int, asJSON bool, e *env) error {
	var recs []*store.AuditRecord
	err := db.WithTenant(ctx, t, func(tx pgx.Tx) error {
		var err error
		recs, _, err = store.FindAudit(ctx, tx, store.AuditFilter{Limit: max(1, n)})
		return err
	})
	if err != nil {
		return err
	}
	for i := len(recs) - 1; i >= 0; i-- { // oldest first, like tail
		r := recs[i]
		if asJSON {
			if err := printJSON(e.stdout, r); err != nil {
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
