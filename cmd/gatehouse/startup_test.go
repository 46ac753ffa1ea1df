package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// TestServeOnBusyPortPrintsNothing: a busy port ends `serve` before any key
// is made or printed, with an error naming the address.
func TestServeOnBusyPortPrintsNothing(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dataDir := storetest.TempDir(t) + "/data"
	var out, errb syncBuffer
	e := &env{stdout: &out, stderr: &errb, stdoutTTY: true, getenv: func(k string) string {
		return map[string]string{"GATEHOUSE_ADDR": busy.Addr().String(), "GATEHOUSE_DATA_DIR": dataDir}[k]
	}}
	code := run(context.Background(), []string{"serve"}, e)
	if code != 1 || out.String() != "" {
		t.Errorf("exit %d, stdout %q; want 1 and nothing", code, out.String())
	}
	if !strings.Contains(errb.String(), busy.Addr().String()) || !strings.Contains(errb.String(), "another process") {
		t.Errorf("stderr does not name the busy address:\n%s", errb.String())
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("the data directory was created although the port was busy (%v)", err)
	}
}

// failingListener accepts nothing: serving on it fails at once, after the
// bootstrap key was made.
type failingListener struct{ net.Listener }

func (failingListener) Accept() (net.Conn, error) { return nil, errors.New("accept: injected failure") }

var bannerKey = regexp.MustCompile(`gk_[a-z2-7]{16}_[A-Za-z0-9_-]{43}`)

// TestBootstrapKeyOnlyOnceServing: when serving fails after the bootstrap
// key was made, nothing is printed, the key is revoked, and the next start
// that serves issues and prints a fresh one, once.
func TestBootstrapKeyOnlyOnceServing(t *testing.T) {
	environ := map[string]string{"DATABASE_URL": storetest.ConnString(t), "GATEHOUSE_ADDR": "127.0.0.1:0"}
	serve := func(ctx context.Context, listen func(string, string) (net.Listener, error), out, errb *syncBuffer) int {
		e := &env{stdout: out, stderr: errb, stdoutTTY: true, getenv: func(k string) string { return environ[k] }, listenFn: listen}
		return run(ctx, []string{"serve"}, e)
	}
	failing := func(network, addr string) (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		return failingListener{ln}, err
	}
	var out, errb syncBuffer
	code := serve(context.Background(), failing, &out, &errb)
	if code != 1 || bannerKey.MatchString(out.String()) {
		t.Fatalf("failed serve: exit %d, stdout %q; want 1 and no key\n%s", code, out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "revoked unseen") {
		t.Errorf("the log does not say the unseen key was revoked:\n%s", errb.String())
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	out = syncBuffer{}
	go func() { done <- serve(ctx, nil, &out, &syncBuffer{}) }()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "More keys:") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if c := <-done; c != 0 {
		t.Errorf("second serve exited %d", c)
	}
	key := bannerKey.FindString(out.String())
	if key == "" {
		t.Fatalf("the start that served printed no key:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "@modelcontextprotocol/inspector@"+inspectorVersion) || !strings.Contains(out.String(), "npx -y") {
		t.Errorf("the banner's Inspector command is not pinned:\n%s", out.String())
	}
	code, list, _ := gh(t, environ, "apikey", "list", "--tenant", "dev", "--json")
	var keys []keyJSON
	if err := json.Unmarshal([]byte(list), &keys); code != 0 || err != nil || len(keys) != 2 {
		t.Fatalf("dev keys: exit %d %v %s", code, err, list)
	}
	live := 0
	for _, k := range keys {
		if k.RevokedAt == nil {
			live++
			if !strings.HasPrefix(key, "gk_"+k.ID+"_") {
				t.Errorf("the live key %s is not the printed one", k.ID)
			}
		}
	}
	if live != 1 {
		t.Errorf("%d live bootstrap keys, want 1 (the unseen one revoked)", live)
	}

	// A third start issues nothing: the bootstrap (before serving) made no
	// key, and the banner was not printed.
	ctx, cancel = context.WithCancel(context.Background())
	out, errb = syncBuffer{}, syncBuffer{}
	go func() { done <- serve(ctx, nil, &out, &errb) }()
	for !strings.Contains(errb.String(), `"msg":"listening"`) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if bannerKey.MatchString(out.String()) {
		t.Errorf("a later start printed a key:\n%s", out.String())
	}
	if _, list, _ := gh(t, environ, "apikey", "list", "--tenant", "dev", "--json"); strings.Count(list, `"id"`) != 2 {
		t.Errorf("a later start issued a key:\n%s", list)
	}
}

// TestBannerInspectorVersionIsTheTested: the Inspector the banner tells
// people to run is the version the end-to-end tests run.
func TestBannerInspectorVersionIsTheTested(t *testing.T) {
	b, err := os.ReadFile("testdata/e2e/package.json")
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		t.Fatal(err)
	}
	if got := pkg.Dependencies["@modelcontextprotocol/inspector"]; got != inspectorVersion {
		t.Errorf("package.json pins Inspector %s, the banner prints %s", got, inspectorVersion)
	}
}
