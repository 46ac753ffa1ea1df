package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

func stdioCmd(ctx context.Context, e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "stdio",
		Short: "Serve MCP on stdin/stdout to a local client, as GATEHOUSE_API_KEY",
		Long: `Serve MCP on stdin/stdout to a local client (Claude Desktop, an editor) as the
holder of the API key in GATEHOUSE_API_KEY. Logs and the audit stream go to
stderr: stdout carries protocol messages only. Every request received before
stdin closes is answered.`,
		Example: `  GATEHOUSE_API_KEY=gk_... gatehouse stdio
  {"mcpServers": {"gatehouse": {"command": "gatehouse", "args": ["stdio"], "env": {"GATEHOUSE_API_KEY": "gk_..."}}}}`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error { return serveStdio(ctx, e) },
	}
}

// serveStdio serves MCP on stdin/stdout to a local client as the holder of
// GATEHOUSE_API_KEY. Logs and the audit stream go to stderr: stdout
// carries protocol messages only.
func serveStdio(ctx context.Context, e *env) error {
	key := e.getenv("GATEHOUSE_API_KEY")
	if key == "" {
		return usagef("set GATEHOUSE_API_KEY to the API key the local client acts with (gatehouse apikey create)")
	}
	cfg, log, err := setup(e)
	if err != nil {
		return err
	}
	db, err := openDatabase(ctx, cfg, log, false)
	if err != nil {
		return err
	}
	defer db.close(ctx, log)
	// Strict, unlike serve: a stdio session serves its key's tenant
	// without the HTTP path's catch-up, so every tenant must be current;
	// tenants held up by locks are tried again, as `gatehouse migrate`
	// does, before it gives up.
	if err := migrateTenantsRetrying(ctx, db.DB, 4, nil, e.stderr); err != nil {
		return fmt.Errorf("migrating tenant schemas: %w", err)
	}
	srv, stop, err := startServer(ctx, cfg, db, log, e.stderr)
	if err != nil {
		return err
	}
	defer stop()
	err = srv.ServeStdio(ctx, key, e.stdin, e.stdout)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
