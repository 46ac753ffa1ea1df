// Command gatehouse is the Gatehouse server and its operator CLI.
//
// This package parses flags and the environment and wires the other packages
// together; it holds no logic of its own beyond presenting results.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
)

// version is set at build time (-ldflags "-X main.version=v1.2.3").
var version = ""

const usage = `Gatehouse: a multi-tenant MCP server.

Usage:
  gatehouse serve                      run the server (DATABASE_URL, or the embedded PostgreSQL)
  gatehouse stdio                      MCP on stdin/stdout for a local client, as GATEHOUSE_API_KEY
  gatehouse migrate                    apply migrations to the control schema and every tenant schema
  gatehouse apikey create --tenant T --role R [--name N] [--scopes S,...] [--expires 720h]
  gatehouse apikey list --tenant T
  gatehouse apikey revoke ID
  gatehouse tenant list
  gatehouse tenant show T
  gatehouse tenant limits show|set|clear T [--rate 600/m --burst 60]
  gatehouse tenant suspend|resume T
  gatehouse tenant export T [--out FILE]
  gatehouse tenant delete T --confirm T
  gatehouse audit verify --tenant T    check the tenant's audit chain (exit 1 and the first bad record if tampered)
  gatehouse audit tail --tenant T [-n 20]
  gatehouse token mint --tenant T --subject S [--role R] [--scopes S,...] [--ttl 1h]
                                       a Gatehouse access token, for local development only
  gatehouse config [--json|--markdown] list the environment variables Gatehouse reads
  gatehouse healthcheck                exit 0 if the server on this machine answers /healthz (for containers)
  gatehouse version

Commands that print results write only the result to stdout (add --json for
machine-readable output); progress and logs go to stderr.
`

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

// errUsage marks command-line mistakes (exit status 2).
var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, e *env) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(ctx, args[1:], e)
	case "stdio":
		err = cmdStdio(ctx, args[1:], e)
	case "migrate":
		err = cmdMigrate(ctx, args[1:], e)
	case "apikey":
		err = cmdAPIKey(ctx, args[1:], e)
	case "tenant":
		err = cmdTenant(ctx, args[1:], e)
	case "token":
		err = cmdToken(ctx, args[1:], e)
	case "audit":
		err = cmdAudit(ctx, args[1:], e)
	case "config":
		err = cmdConfig(args[1:], e)
	case "healthcheck":
		err = cmdHealthcheck(ctx, e)
	case "version", "--version":
		fmt.Fprintln(e.stdout, buildVersion())
	case "help", "-h", "--help":
		fmt.Fprint(e.stdout, usage)
	default:
		err = fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(e.stderr, "gatehouse: %v\n\n%s", err, usage)
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

func cmdConfig(args []string, e *env) error {
	fs := flag.NewFlagSet("config", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	markdown := fs.Bool("markdown", false, "print docs/configuration.md")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	switch {
	case *asJSON:
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
	case *markdown:
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
