package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// TestEndToEnd builds the gatehouse binary, runs `gatehouse serve` on the
// embedded PostgreSQL exactly as a user would, creates a key with the CLI
// while the server runs, and drives the server with MCP Inspector's CLI.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs MCP Inspector")
	}
	nodeDir, err := filepath.Abs("testdata/e2e")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "@modelcontextprotocol", "inspector")); err != nil {
		t.Fatalf("MCP Inspector is not installed: run `make test` (or `npm ci --prefix cmd/gatehouse/testdata/e2e`) first")
	}
	work := storetest.TempDir(t)
	bin := filepath.Join(work, "gatehouse")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	addr := freeAddr(t)
	base := "http://" + addr
	environ := append(os.Environ(), "GATEHOUSE_ADDR="+addr, "GATEHOUSE_DATA_DIR="+filepath.Join(work, "data"), "DATABASE_URL=")

	srv := exec.Command(bin, "serve")
	srv.Env = environ
	stdout, _ := srv.StdoutPipe()
	var logs syncBuffer
	srv.Stderr = &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	stopped := false
	defer func() {
		if !stopped {
			_ = srv.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	}()

	// First start prints the bootstrap key once, with client snippets.
	var banner strings.Builder
	keyRe := regexp.MustCompile(`gk_[a-z2-7]{16}_[A-Za-z0-9_-]{43}`)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		banner.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "More keys:") {
			break
		}
	}
	go func() {
		for sc.Scan() { // drain the rest: a full pipe would block the server
		}
		exited <- srv.Wait()
	}()
	firstStart := banner.String()
	bootstrapKey := keyRe.FindString(firstStart)
	for _, want := range []string{"claude mcp add --transport http gatehouse " + base + "/mcp", "--method tools/list", `"mcpServers"`, `"servers"`} {
		if !strings.Contains(firstStart, want) {
			t.Errorf("first-start banner lacks %q:\n%s", want, firstStart)
		}
	}
	if bootstrapKey == "" {
		t.Fatalf("no bootstrap key printed:\n%s", firstStart)
	}
	waitReady(t, base)

	// The CLI reaches the same embedded database while the server runs.
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = environ
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("gatehouse %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return string(out)
	}
	devKey := strings.TrimSpace(cli("apikey", "create", "--tenant", "acme.com", "--role", "developer", "--name", "e2e"))
	if !keyRe.MatchString(devKey) {
		t.Fatalf("apikey create printed %q", devKey)
	}

	inspector := func(key string, args ...string) (string, error) {
		t.Helper()
		full := append([]string{"--no-install", "@modelcontextprotocol/inspector", "--cli", base + "/mcp",
			"--transport", "http", "--header", "Authorization: Bearer " + key}, args...)
		cmd := exec.Command("npx", full...)
		cmd.Dir = nodeDir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return string(out), fmt.Errorf("%w: %s", err, stderr.String())
		}
		return string(out), nil
	}

	out, err := inspector(bootstrapKey, "--method", "tools/list")
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
	if got := strings.Join(names, ","); len(names) != 4 || !strings.Contains(got, "add_todo") || !strings.Contains(got, "whoami") {
		t.Errorf("inspector lists tools %v, want all four", names)
	}

	out, err = inspector(devKey, "--method", "tools/call", "--tool-name", "add_todo", "--tool-arg", "title=Ship the skeleton")
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
	out, err = inspector(devKey, "--method", "tools/call", "--tool-name", "whoami")
	if err != nil || !strings.Contains(out, `"tenant": "acme.com"`) || !strings.Contains(out, `"role": "developer"`) {
		t.Errorf("whoami via inspector: %v\n%s", err, out)
	}
	// The bootstrap key's tenant (dev) does not see acme.com's todo.
	out, err = inspector(bootstrapKey, "--method", "tools/call", "--tool-name", "list_todos", "--tool-arg", "status=all")
	if err != nil || strings.Contains(out, "Ship the skeleton") {
		t.Errorf("dev tenant sees acme's todo: %v\n%s", err, out)
	}
	// A revoked key is refused at once.
	keyID := devKey[3:19]
	cli("apikey", "revoke", keyID)
	if out, err := inspector(devKey, "--method", "tools/list"); err == nil {
		t.Errorf("revoked key still lists tools:\n%s", out)
	}

	// Graceful shutdown: SIGTERM drains, stops the embedded PostgreSQL, exits 0.
	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("server exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not exit within 30s of SIGTERM")
	}
	if _, err := os.Stat(filepath.Join(work, "data", "pgdata", "postmaster.pid")); !os.IsNotExist(err) {
		t.Errorf("embedded PostgreSQL still running after shutdown")
	}
	// Secrets never reach the logs.
	for _, secret := range []string{bootstrapKey, devKey} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("a secret appears in the server log")
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("log line is not JSON: %q", line)
		}
	}

	// A second start reuses the data and prints no key.
	again := exec.Command(bin, "serve")
	again.Env = environ
	var out2 bytes.Buffer
	again.Stdout = &out2
	if err := again.Start(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, base)
	_ = again.Process.Signal(syscall.SIGTERM)
	_ = again.Wait()
	if keyRe.MatchString(out2.String()) {
		t.Errorf("second start printed a key:\n%s", out2.String())
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("server not ready within 60s")
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
