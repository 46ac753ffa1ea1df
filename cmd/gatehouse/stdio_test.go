package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// TestStdio runs `gatehouse stdio` as a local client would (Claude Desktop
// launching it) and drives it with the official go-sdk client over the
// process's stdin/stdout: same tools, limits, audit and revocation as HTTP.
func TestStdio(t *testing.T) {
	ss := startStdio(t)
	ctx, cs, cmd, stderr, environ, dbURL, key := ss.ctx, ss.cs, ss.cmd, ss.stderr, ss.environ, ss.dbURL, ss.key
	tools, err := cs.ListTools(ctx, nil)
	var names []string
	for _, tl := range tools.Tools {
		names = append(names, tl.Name)
	}
	if err != nil || !slices.Contains(names, "add_todo") || slices.Contains(names, "read_audit_log") {
		t.Errorf("tools/list for a developer: %v, %v", names, err)
	}
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "add_todo", Arguments: map[string]any{"title": "from stdio"}})
	if err != nil || res.IsError {
		t.Fatalf("add_todo: %v %+v\n%s", err, res, stderr.String())
	}
	res, err = cs.CallTool(ctx, &sdk.CallToolParams{Name: "read_audit_log"})
	if err != nil || !res.IsError || !strings.Contains(res.Content[0].(*sdk.TextContent).Text, "ACCESS DENIED") {
		t.Errorf("read_audit_log as a developer: %v %+v", err, res)
	}
	// The 5th call is over the principal's burst of 4 (list_tools does not count: only calls do over stdio).
	var limited error
	for range 3 {
		if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "whoami"}); err != nil {
			limited = err
		}
	}
	// A refusal is a JSON-RPC error with HTTP's code (-32029), not an
	// error without a code.
	var rpc *jsonrpc.Error
	if !errors.As(limited, &rpc) || rpc.Code != -32029 || !strings.Contains(rpc.Message, "rate limit exceeded") || !strings.Contains(rpc.Message, "retry in") ||
		!strings.Contains(string(rpc.Data), "retry_after_seconds") {
		t.Errorf("over the limit: %#v", limited)
	}
	// Revoking the key ends its use within the session.
	gh(t, environ, "apikey", "revoke", key[3:19])
	time.Sleep(1500 * time.Millisecond) // past the rate limit's retry, so the refusal is the revocation's
	_, err = cs.CallTool(ctx, &sdk.CallToolParams{Name: "whoami"})
	if !errors.As(err, &rpc) || rpc.Code != jsonrpc.CodeInvalidRequest || !strings.Contains(rpc.Message, "revoked") || strings.Contains(rpc.Message, key) {
		t.Errorf("after revocation: %#v", err)
	}
	cs.Close()
	_ = cmd.Wait()
	if strings.Contains(stderr.String(), key) {
		t.Error("the API key appears in the log")
	}

	// The calls were audited, as stdio calls, once the session flushed.
	db, err := store.Open(ctx, dbURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tn, _ := db.FindTenantByKey(ctx, "acme.com")
	var decisions []string
	_ = db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
		recs, _, err := store.FindAudit(ctx, tx, store.AuditFilter{Limit: 100})
		for _, r := range recs {
			if r.ClientIP == "stdio" {
				decisions = append(decisions, r.Decision+":"+r.Tool)
			}
		}
		return err
	})
	got := strings.Join(decisions, " ")
	for _, want := range []string{"ALLOWED:add_todo", "DENIED:read_audit_log", "RATE_LIMITED:whoami"} {
		if !strings.Contains(got, want) {
			t.Errorf("audit records %q lack %s", got, want)
		}
	}
}

func TestStdioRefusesABadKey(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	cmd := exec.Command(binary(t), "stdio")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+storetest.ConnString(t), "GATEHOUSE_API_KEY=gk_aaaaaaaaaaaaaaaa_"+strings.Repeat("B", 43))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil || !strings.Contains(stderr.String(), "GATEHOUSE_API_KEY") || !strings.Contains(stderr.String(), "unknown API key") || stdout.Len() != 0 {
		t.Errorf("exit %v, stdout %q, stderr %s", err, stdout.String(), stderr.String())
	}
}

// TestStdioAnswersEverythingBeforeEOF: a client that writes its requests
// and closes stdin at once (a script piping them in) gets every answer,
// the last included.
func TestStdioAnswersEverythingBeforeEOF(t *testing.T) {
	dbURL := storetest.ConnString(t)
	environ := map[string]string{"DATABASE_URL": dbURL}
	_, key, _ := gh(t, environ, "apikey", "create", "--tenant", "acme.com", "--role", "developer")
	environ["GATEHOUSE_API_KEY"] = strings.TrimSpace(key)
	var in strings.Builder
	in.WriteString(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"pipe","version":"1"}}}` + "\n")
	in.WriteString(`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n")
	const calls = 5
	for i := 1; i <= calls; i++ {
		fmt.Fprintf(&in, `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"add_todo","arguments":{"title":"piped %d"}}}`+"\n", i, i)
	}
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(in.String()), stdout: &out, stderr: &errb, getenv: func(k string) string { return environ[k] }}
	if code := run(context.Background(), []string{"stdio"}, e); code != 0 {
		t.Fatalf("exit %d\n%s", code, errb.String())
	}
	answered := map[int]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m struct {
			ID     *int            `json:"id"`
			Result json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal([]byte(line), &m); err != nil || m.ID == nil || m.Result == nil {
			t.Errorf("not an answer: %s", line)
			continue
		}
		answered[*m.ID] = true
	}
	for i := 0; i <= calls; i++ {
		if !answered[i] {
			t.Errorf("request %d was not answered:\n%s", i, out.String())
		}
	}
}

// stdioSession is `gatehouse stdio` started for a developer key of
// acme.com (burst 4 per principal), with the go-sdk client connected to
// it over the process's stdin/stdout.
type stdioSession struct {
	ctx        context.Context // ends with the test, a minute at most
	cs         *sdk.ClientSession
	cmd        *exec.Cmd
	stderr     *syncBuffer
	environ    map[string]string // for further gatehouse commands on the same database
	dbURL, key string
}

func startStdio(t *testing.T) *stdioSession {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	s := &stdioSession{dbURL: storetest.ConnString(t), stderr: &syncBuffer{}}
	s.environ = map[string]string{"DATABASE_URL": s.dbURL}
	_, key, _ := gh(t, s.environ, "apikey", "create", "--tenant", "acme.com", "--role", "developer")
	s.key = strings.TrimSpace(key)

	s.cmd = exec.Command(binary(t), "stdio")
	s.cmd.Stderr = s.stderr
	s.cmd.Env = append(os.Environ(), "DATABASE_URL="+s.dbURL, "GATEHOUSE_API_KEY="+s.key,
		"GATEHOUSE_PRINCIPAL_RATE=60/m", "GATEHOUSE_PRINCIPAL_BURST=4")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	s.ctx = ctx
	client := sdk.NewClient(&sdk.Implementation{Name: "stdio-test", Version: "1"}, nil)
	var err error
	if s.cs, err = client.Connect(ctx, &sdk.CommandTransport{Command: s.cmd}, nil); err != nil {
		t.Fatalf("connect: %v\n%s", err, s.stderr.String())
	}
	return s
}
