package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// The command line is built with spf13/cobra: every command and subcommand
// answers --help/-h with its own usage (every flag, an example) on stdout,
// exit 0; a command-line mistake prints one line and "see gatehouse X
// --help" on stderr, exit 2; shell completion comes with it.

// usageError is a command-line mistake (exit status 2).
type usageError struct{ err error }

func (u *usageError) Error() string { return u.err.Error() }
func (u *usageError) Unwrap() error { return u.err }

// usagef makes a usageError.
func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

func isUsage(err error) bool {
	var u *usageError
	return errors.As(err, &u)
}

// newRoot builds the command tree for one run.
func newRoot(ctx context.Context, e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "gatehouse",
		Short: "Gatehouse: a multi-tenant MCP server, and its operator CLI",
		Long: `Gatehouse: a multi-tenant MCP server, and its operator CLI.

Configuration comes from the environment (gatehouse config lists every
variable). Without DATABASE_URL, commands use the embedded PostgreSQL in
GATEHOUSE_DATA_DIR, as the server does.

Commands that print results write only the result to stdout (--json for
machine-readable output: one JSON document, or JSON lines for audit tail);
progress and logs go to stderr.`,
		Example: `  gatehouse serve
  gatehouse apikey create --tenant acme.com --role admin
  gatehouse audit verify --tenant acme.com`,
		Version:       buildVersion(),
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          subcommandArgs,
		RunE:          needSubcommand,
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.AddCommand(
		serveCmd(ctx, e), stdioCmd(ctx, e), migrateCmd(ctx, e),
		apikeyCmd(ctx, e), tenantCmd(ctx, e), auditCmd(ctx, e), tokenCmd(ctx, e),
		configCmd(e), healthcheckCmd(ctx, e), versionCmd(e),
	)
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		switch c.Name() {
		case "help":
			c.Example = "  gatehouse help apikey create"
		case "completion":
			c.Example = "  gatehouse completion bash > /etc/bash_completion.d/gatehouse"
			for _, sh := range c.Commands() {
				sh.Example = fmt.Sprintf("  source <(gatehouse completion %s)", sh.Name())
				if sh.Name() == "powershell" {
					sh.Example = "  gatehouse completion powershell | Out-String | Invoke-Expression"
				}
			}
		}
	}
	return root
}

// subcommandArgs refuses an unknown subcommand of a command that only
// groups others (cobra would otherwise print the group's help, exit 0).
func subcommandArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	hint := ""
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		hint = fmt.Sprintf("; did you mean %s?", strings.Join(s, " or "))
	}
	return usagef("unknown command %q for %q (commands: %s)%s", args[0], cmd.CommandPath(), subcommandNames(cmd), hint)
}

// needSubcommand runs a grouping command without a subcommand.
func needSubcommand(cmd *cobra.Command, _ []string) error {
	return usagef("%s needs a command: %s", cmd.CommandPath(), subcommandNames(cmd))
}

func subcommandNames(cmd *cobra.Command) string {
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() && c.Name() != "help" && c.Name() != "completion" {
			names = append(names, c.Name())
		}
	}
	return strings.Join(names, ", ")
}

// group is a command that only groups subcommands.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{Use: use, Short: short, Args: subcommandArgs, RunE: needSubcommand}
	c.AddCommand(subs...)
	var ex []string
	for _, s := range subs {
		if first, _, _ := strings.Cut(strings.TrimSpace(s.Example), "\n"); first != "" {
			ex = append(ex, "  "+first)
		}
	}
	c.Example = strings.Join(ex, "\n")
	return c
}

// noArgs refuses positional arguments.
func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	return nil
}

// oneArg wants exactly one positional argument, described by what.
func oneArg(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != 1 {
			return usagef("%s takes one argument: %s", cmd.CommandPath(), what)
		}
		return nil
	}
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
	db, err := openDatabase(ctx, cfg, log, false)
	if err != nil {
		return err
	}
	defer db.close(ctx, log)
	return fn(cfg, db, log)
}

// printJSON writes v as one indented JSON document.
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
			return time.Time{}, fmt.Errorf("--expires %q: want a positive number of days such as 90d", s)
		}
		return now.AddDate(0, 0, n), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("--expires %q: want a duration such as 720h or 90d, or never", s)
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
