package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
	"github.com/gatehouse-mcp/gatehouse/mcp"
)

var keyRe = regexp.MustCompile(`gk_[a-z2-7]{16}_[A-Za-z0-9_-]{43}`)

// TestEndToEnd runs `gatehouse serve` on the embedded PostgreSQL exactly as
// a user would, creates a key with the CLI while the server runs, and drives
// the server with MCP Inspector's CLI.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs MCP Inspector")
	}
	nodeDir(t)
	s := runBinary(t)

	// First start prints the bootstrap key once, with client snippets.
	bootstrapKey := keyRe.FindString(s.banner)
	for _, want := range []string{"claude mcp add --transport http gatehouse " + s.base + "/mcp", "--method tools/list", `"mcpServers"`, `"servers"`} {
		if !strings.Contains(s.banner, want) {
			t.Errorf("first-start banner lacks %q:\n%s", want, s.banner)
		}
	}
	if bootstrapKey == "" {
		t.Fatalf("no bootstrap key printed:\n%s", s.banner)
	}

	// The CLI reaches the same embedded database while the server runs.
	devKey := strings.TrimSpace(s.cli(t, "apikey", "create", "--tenant", "acme.com", "--role", "developer", "--name", "e2e"))
	if !keyRe.MatchString(devKey) {
		t.Fatalf("apikey create printed %q", devKey)
	}

	out, err := s.inspector(t, bootstrapKey, "--method", "tools/list")
	if err != nil {
		t.Fatalf("inspector tools/list: %v", err)
	}
	var list struct{ Tools []struct{ Name string } }
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("tools/list output: %v\n%s", err, out)
	}
	var names []string
	for _, tl := range list.Tools {
		names = append(names, tl.Name)
	}
	if len(names) != len(mcp.ToolNames()) {
		t.Errorf("inspector lists tools %v, want all %d (the bootstrap key is an admin)", names, len(mcp.ToolNames()))
	}

	out, err = s.inspector(t, devKey, "--method", "tools/call", "--tool-name", "add_todo", "--tool-arg", "title=Ship the skeleton")
	if err != nil {
		t.Fatalf("inspector add_todo: %v", err)
	}
	var added struct {
		IsError           bool `json:"isError"`
		StructuredContent struct{ ID, Title string }
	}
	if err := json.Unmarshal([]byte(out), &added); err != nil || added.IsError || added.StructuredContent.Title != "Ship the skeleton" {
		t.Errorf("add_todo via inspector: %v\n%s", err, out)
	}
	out, err = s.inspector(t, devKey, "--method", "tools/call", "--tool-name", "whoami")
	if err != nil || !strings.Contains(out, `"tenant": "acme.com"`) || !strings.Contains(out, `"role": "developer"`) {
		t.Errorf("whoami via inspector: %v\n%s", err, out)
	}
	// The bootstrap key's tenant (dev) does not see acme.com's todo.
	out, err = s.inspector(t, bootstrapKey, "--method", "tools/call", "--tool-name", "list_todos", "--tool-arg", "status=all")
	if err != nil || strings.Contains(out, "Ship the skeleton") {
		t.Errorf("dev tenant sees acme's todo: %v\n%s", err, out)
	}
	// A revoked key is refused at once.
	s.cli(t, "apikey", "revoke", devKey[3:19])
	if out, err := s.inspector(t, devKey, "--method", "tools/list"); err == nil {
		t.Errorf("revoked key still lists tools:\n%s", out)
	}

	// Graceful shutdown: SIGTERM drains, stops the embedded PostgreSQL, exits 0.
	s.stop(t)
	if _, err := os.Stat(filepath.Join(s.dataDir, "pgdata", "postmaster.pid")); !os.IsNotExist(err) {
		t.Errorf("embedded PostgreSQL still running after shutdown")
	}
	// Secrets never reach the logs, and every log line is JSON.
	for _, secret := range []string{bootstrapKey, devKey} {
		if strings.Contains(s.logs.String(), secret) {
			t.Errorf("a secret appears in the server log")
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(s.logs.String()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("log line is not JSON: %q", line)
		}
	}

	// A second start reuses the data and prints no key.
	again := exec.Command(s.cmd.Path, "serve")
	again.Env = s.env
	var out2 bytes.Buffer
	again.Stdout = &out2
	if err := again.Start(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, s.base)
	_ = again.Process.Signal(syscall.SIGTERM)
	_ = again.Wait()
	if keyRe.MatchString(out2.String()) {
		t.Errorf("second start printed a key:\n%s", out2.String())
	}
}

// TestEndToEndGitHub configures the binary for GitHub through the
// environment alone, against a fake of GitHub's API, and signs in with a
// GitHub user token from MCP Inspector.
func TestEndToEndGitHub(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs MCP Inspector")
	}
	nodeDir(t)
	gh := idptest.NewGitHub(t, "Ov23e2e", "e2e-secret")
	gh.Issue("gho_e2e_alice", idptest.GitHubGrant{User: idptest.GitHubUser{ID: 4242, Login: "alice", Name: "Alice", Emails: []idptest.GitHubEmail{
		{Email: "alice@acme.com", Primary: true, Verified: true},
	}}})
	gh.Issue("gho_e2e_other_app", idptest.GitHubGrant{App: "Iv1.other", User: idptest.GitHubUser{ID: 7, Login: "mallory"}})
	s := runBinary(t, "GATEHOUSE_GITHUB_CLIENT_ID=Ov23e2e", "GATEHOUSE_GITHUB_CLIENT_SECRET=e2e-secret", "GATEHOUSE_GITHUB_API_URL="+gh.URL())

	out, err := s.inspector(t, "gho_e2e_alice", "--method", "tools/call", "--tool-name", "whoami")
	if err != nil || !strings.Contains(out, `"tenant": "acme.com"`) || !strings.Contains(out, `"subject": "github:4242"`) || !strings.Contains(out, `"role": "admin"`) {
		t.Errorf("GitHub user via inspector: %v\n%s", err, out)
	}
	if out, err := s.inspector(t, "gho_e2e_other_app", "--method", "tools/list"); err == nil {
		t.Errorf("another app's GitHub token was accepted:\n%s", out)
	}
	if !strings.Contains(s.logs.String(), `"enabled":["apikey","github"]`) {
		t.Errorf("start-up log does not list the enabled providers")
	}
	s.stop(t)
	for _, secret := range []string{"gho_e2e_alice", "gho_e2e_other_app", "e2e-secret"} {
		if strings.Contains(s.logs.String(), secret) {
			t.Errorf("%s appears in the server log", secret)
		}
	}
}
