// Command gatehouse is the Gatehouse server and its operator CLI.
//
// This package parses flags and the environment and wires the other packages
// together; it holds no logic of its own beyond presenting results.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time (-ldflags "-X main.version=v1.2.3").
var version = ""

// env is what a command gets from the process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	stdoutTTY      bool
	// listenFn binds serve's address; nil is net.Listen (tests inject
	// listeners that fail).
	listenFn func(network, addr string) (net.Listener, error)
}

func (e *env) listen(network, addr string) (net.Listener, error) {
	if e.listenFn != nil {
		return e.listenFn(network, addr)
	}
	return net.Listen(network, addr)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, stdoutTTY: isTerminal(os.Stdout)}
	os.Exit(run(ctx, os.Args[1:], e))
}

// run runs one command line and returns its exit status: 0, 1 when the
// command failed (or an audit chain is broken), 2 for a command-line
// mistake or an invalid configuration.
func run(ctx context.Context, args []string, e *env) int {
	root := newRoot(ctx, e)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	switch {
	case err == nil:
		return 0
	case isUsage(err):
		fmt.Fprintf(e.stderr, "gatehouse: %v\nsee %s --help\n", err, cmd.CommandPath())
		return 2
	case errors.Is(err, errConfig):
		fmt.Fprintf(e.stderr, "gatehouse: %v\n", err)
		return 2
	case errors.Is(err, errTampered):
		return 1 // the report is on stdout
	}
	fmt.Fprintf(e.stderr, "gatehouse: %v\n", err)
	return 1
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	// Built without a version: the commit the platform deployed, if it says.
	for _, v := range []string{"RENDER_GIT_COMMIT", "RAILWAY_GIT_COMMIT_SHA"} {
		if c := os.Getenv(v); c != "" {
			return c[:min(len(c), 12)]
		}
	}
	return "dev"
}

// errConfig marks an invalid environment (exit status 2).
var errConfig = errors.New("invalid configuration")

// setup loads the configuration and builds the logger (JSON on stderr).
func setup(e *env) (*Config, *slog.Logger, error) {
	cfg, err := loadConfig(e.getenv)
	if err != nil {
		return nil, nil, fmt.Errorf("%w; fix every problem below and start again:\n%s", errConfig, indent(err))
	}
	log := slog.New(slog.NewJSONHandler(e.stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	return cfg, log, nil
}

// indent lists a joined error's lines as bullet points.
func indent(err error) string {
	return "  - " + strings.ReplaceAll(err.Error(), "\n", "\n  - ")
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func versionCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use: "version", Short: "Print the version (the git commit it was built from)",
		Example: "  gatehouse version", Args: noArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(e.stdout, buildVersion())
			return err
		},
	}
}

func configCmd(e *env) *cobra.Command {
	var asJSON, markdown bool
	c := &cobra.Command{
		Use:   "config",
		Short: "List the environment variables Gatehouse reads, with defaults",
		Example: `  gatehouse config
  gatehouse config --json
  gatehouse config --markdown > docs/configuration.md`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error {
			if asJSON && markdown {
				return usagef("--json and --markdown: choose one")
			}
			return printConfig(e, asJSON, markdown)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().BoolVar(&markdown, "markdown", false, "print docs/configuration.md")
	return c
}

func printConfig(e *env, asJSON, markdown bool) error {
	switch {
	case asJSON:
		type v struct {
			Name    string `json:"name"`
			Default string `json:"default"`
			Secret  bool   `json:"secret"`
			Help    string `json:"help"`
		}
		out := make([]v, 0, len(envVars))
		for _, e := range envVars {
			out = append(out, v(e))
		}
		return printJSON(e.stdout, out)
	case markdown:
		_, err := fmt.Fprint(e.stdout, configMarkdown())
		return err
	}
	for _, v := range envVars {
		def := v.Default
		if def == "" {
			def = "(unset)"
		}
		secret := ""
		if v.Secret {
			secret = " [secret]"
		}
		fmt.Fprintf(e.stdout, "%s=%s%s\n    %s\n", v.Name, def, secret, v.Help)
	}
	return nil
}
