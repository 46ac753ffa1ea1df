package main

import (
	"context"
	"fmt"
	"log/slog"
)

func cmdMigrate(ctx context.Context, args []string, e *env) error {
	fs := newFlagSet("migrate", e)
	parallel := fs.Int("parallel", 4, "tenant schemas migrated at once")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	return withDatabase(ctx, e, func(db *database, _ *slog.Logger) error {
		// openDatabase has brought the control schema up to date.
		migrated := 0
		err := db.MigrateTenants(ctx, *parallel, func(done, total int) {
			migrated = done
			fmt.Fprintf(e.stderr, "migrated %d/%d tenant schemas\n", done, total)
		})
		if err != nil {
			return err
		}
		st, err := db.MigrationStatus(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(e.stdout, map[string]int{"control_version": st.Control, "tenants_migrated": migrated, "tenants_behind": st.TenantsBehind})
		}
		_, err = fmt.Fprintf(e.stdout, "up to date: control schema at version %d, %d tenant schema(s) migrated\n", st.Control, migrated)
		return err
	})
}
