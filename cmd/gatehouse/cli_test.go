package main

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// commands lists every command of the tree, root first.
func commands(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{c}
	for _, s := range c.Commands() {
		out = append(out, commands(s)...)
	}
	return out
}

// TestEveryCommandHelp: every command and subcommand answers --help and -h
// with its own usage, naming every flag, with an example, on stdout, exit 0,
// and runs nothing (a healthcheck with --help checks nothing).
func TestEveryCommandHelp(t *testing.T) {
	root := newRoot(t.Context(), &env{getenv: func(string) string { return "" }})
	all := commands(root)
	if len(all) < 20 {
		t.Fatalf("only %d commands found", len(all))
	}
	for _, c := range all {
		path := strings.Fields(c.CommandPath())[1:]
		for _, h := range []string{"--help", "-h"} {
			t.Run(strings.Join(append(path, h), " "), func(t *testing.T) {
				code, stdout, stderr := gh(t, nil, append(path, h)...)
				if code != 0 || stderr != "" {
					t.Fatalf("exit %d, stderr %q", code, stderr)
				}
				if !strings.Contains(stdout, "Usage:\n  "+c.UseLine()) {
					t.Errorf("no usage line %q:\n%s", c.UseLine(), stdout)
				}
				if !strings.Contains(stdout, "Examples:\n  ") {
					t.Errorf("no example:\n%s", stdout)
				}
				c.Flags().VisitAll(func(f *pflag.Flag) {
					if !strings.Contains(stdout, "--"+f.Name) {
						t.Errorf("flag --%s not described:\n%s", f.Name, stdout)
					}
				})
			})
		}
	}
}

// TestCommandLineMistakes: a flag error or a wrong argument prints one line
// and where to get help, exit 2, for every command.
func TestCommandLineMistakes(t *testing.T) {
	t.Chdir(t.TempDir()) // a mistake that reached the embedded database would leave ./.gatehouse here
	root := newRoot(t.Context(), &env{getenv: func(string) string { return "" }})
	for _, c := range commands(root) {
		path := strings.Fields(c.CommandPath())[1:]
		args := append(append([]string{}, path...), "--no-such-flag")
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, stdout, stderr := gh(t, nil, args...)
			want := "gatehouse: unknown flag: --no-such-flag\nsee " + c.CommandPath() + " --help\n"
			if code != 2 || stdout != "" || stderr != want {
				t.Errorf("exit %d, stdout %q, stderr %q; want 2 and %q", code, stdout, stderr, want)
			}
		})
	}
	tests := []struct {
		args []string
		want string // the first line of stderr
	}{
		{nil, "gatehouse: gatehouse needs a command: apikey, audit, config, healthcheck, migrate, serve, stdio, tenant, token, version"},
		{[]string{"srve"}, `gatehouse: unknown command "srve" for "gatehouse" (commands: apikey, audit, config, healthcheck, migrate, serve, stdio, tenant, token, version); did you mean serve?`},
		{[]string{"apikey"}, "gatehouse: gatehouse apikey needs a command: create, list, revoke"},
		{[]string{"apikey", "delete"}, `gatehouse: unknown command "delete" for "gatehouse apikey" (commands: create, list, revoke)`},
		{[]string{"tenant", "limits"}, "gatehouse: gatehouse tenant limits needs a command: clear, set, show"},
		{[]string{"tenant", "limits", "sett", "acme.com"}, `gatehouse: unknown command "sett" for "gatehouse tenant limits" (commands: clear, set, show); did you mean set?`},
		{[]string{"apikey", "revoke"}, "gatehouse: gatehouse apikey revoke takes one argument: the key's id (gatehouse apikey list shows them)"},
		{[]string{"apikey", "revoke", "a", "b"}, "gatehouse: gatehouse apikey revoke takes one argument: the key's id (gatehouse apikey list shows them)"},
		{[]string{"apikey", "list"}, "gatehouse: --tenant is required (for example --tenant acme.com)"},
		{[]string{"apikey", "create", "--tenant"}, "gatehouse: flag needs an argument: --tenant"},
		{[]string{"audit", "tail", "--tenant", "acme.com", "-n", "x"}, `gatehouse: invalid argument "x" for "-n, --lines" flag: strconv.ParseInt: parsing "x": invalid syntax`},
		{[]string{"audit", "tail", "--tenant", "acme.com", "-n", "0"}, "gatehouse: -n 0: want 1 or more records"},
		{[]string{"audit", "verify"}, "gatehouse: --tenant is required (for example --tenant acme.com)"},
		{[]string{"token", "mint", "--ttl", "forever"}, `gatehouse: invalid argument "forever" for "--ttl" flag: time: invalid duration "forever"`},
		{[]string{"tenant", "show"}, "gatehouse: gatehouse tenant show takes one argument: a tenant key, such as acme.com"},
		{[]string{"tenant", "limits", "set", "acme.com"}, "gatehouse: --rate is required (such as --rate 600/m, or --rate off for no limit)"},
		{[]string{"tenant", "limits", "set", "acme.com", "--rate", "lots"}, `gatehouse: --rate/--burst: "lots" is not a rate such as 10/s, 600/m or 3600/h (or off)`},
		{[]string{"tenant", "limits", "set", "acme.com", "--rate", "60/m", "--burst", "0"}, "gatehouse: --rate/--burst: burst 0: want 1 or more requests at once"},
		{[]string{"serve", "now"}, `gatehouse: unexpected argument "now"`},
		{[]string{"config", "--json", "--markdown"}, "gatehouse: --json and --markdown: choose one"},
		{[]string{"migrate", "--parallel", "0"}, "gatehouse: --parallel 0: want 1 or more"},
		{[]string{"stdio"}, "gatehouse: set GATEHOUSE_API_KEY to the API key the local client acts with (gatehouse apikey create)"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := gh(t, nil, tt.args...)
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if code != 2 || stdout != "" || len(lines) != 2 || lines[0] != tt.want || !strings.HasPrefix(lines[1], "see gatehouse") || !strings.HasSuffix(lines[1], " --help") {
				t.Errorf("exit %d, stdout %q, stderr:\n%s\nwant exit 2 and %q, then a help hint", code, stdout, stderr, tt.want)
			}
		})
	}
}

// TestVersion: gatehouse version and --version print the version alone.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		if code, out, _ := gh(t, nil, args...); code != 0 || out != buildVersion()+"\n" {
			t.Errorf("%v: exit %d, %q", args, code, out)
		}
	}
}

// TestCompletion: cobra's shell completion is there.
func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		if code, out, _ := gh(t, nil, "completion", sh); code != 0 || !strings.Contains(out, "gatehouse") {
			t.Errorf("completion %s: exit %d", sh, code)
		}
	}
}
