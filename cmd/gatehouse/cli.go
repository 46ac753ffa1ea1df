package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// parse parses flags that may come before or after positional arguments
// ("apikey revoke ID --json") and returns the positional ones.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w: %w", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func newFlagSet(name string, e *env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

// withDatabase runs fn against the configured database (see openDatabase).
// CLI logs are warnings and errors only, so stderr stays readable.
func withDatabase(ctx context.Context, e *env, fn func(db *database, log *slog.Logger) error) error {
	return withConfigAndDatabase(ctx, e, func(_ *Config, db *database, log *slog.Logger) error { return fn(db, log) })
}

// withConfigAndDatabase is withDatabase for commands that need the
// configuration too.
func withConfigAndDatabase(ctx context.Context, e *env, fn func(cfg *Config, db *database, log *slog.Logger) error) error {
	cfg, log, err := setup(e)
	if err != nil {
		return err
	}
	if cfg.LogLevel < slog.LevelWarn {
		log = slog.New(slog.NewJSONHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	db, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.close(ctx, log)
	return fn(cfg, db, log)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// parseExpiry reads --expires: a Go duration ("720h"), a number of days
// ("90d"), or "never"/"0".
func parseExpiry(s string, now time.Time) (time.Time, error) {
	switch s {
	case "", "0", "never":
		return time.Time{}, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 {
			return time.Time{}, fmt.Errorf("%w: --expires %q: want a positive number of days such as 90d", errUsage, s)
		}
		return now.AddDate(0, 0, n), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("%w: --expires %q: want a duration such as 720h or 90d, or never", errUsage, s)
	}
	return now.Add(d), nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04Z")
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
