package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
)

// cmdStdio serves MCP on stdin/stdout to a local client (Claude Desktop, an
// editor) as the holder of GATEHOUSE_API_KEY. Logs and the audit stream go
// to stderr: stdout carries protocol messages only.
func cmdStdio(ctx context.Context, args []string, e *env) error {
	fs := flag.NewFlagSet("stdio", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	key := e.getenv("GATEHOUSE_API_KEY")
	if key == "" {
		return fmt.Errorf("%w: set GATEHOUSE_API_KEY to the API key the local client acts with (gatehouse apikey create)", errUsage)
	}
	cfg, log, err := setup(e)
	if err != nil {
		return err
	}
	db, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.close(ctx, log)
	if err := db.MigrateTenants(ctx, 4, nil); err != nil {
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
