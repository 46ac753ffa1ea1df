package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity/idptest"
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
	if !strings.Contains(out.String(), "@modelcontextprotocol/inspector@"+inspectorVersion) || !strings.Contains(out.String(), "npx -y") ||
		!strings.Contains(out.String(), "Node.js 22.19 or later") {
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

// serveInProcess runs `gatehouse serve` in this process on a fresh test
// database with environ (GATEHOUSE_ADDR and DATABASE_URL filled in unless
// given), waits until ready, and stops it when the test ends. It returns
// the base URL and the server's log.
func serveInProcess(t *testing.T, environ map[string]string) (string, *syncBuffer) {
	t.Helper()
	if environ["GATEHOUSE_ADDR"] == "" {
		environ["GATEHOUSE_ADDR"] = freeAddr(t)
	}
	if _, set := environ["DATABASE_URL"]; !set {
		environ["DATABASE_URL"] = storetest.ConnString(t)
	}
	var out, logs syncBuffer
	e := &env{stdout: &out, stderr: &logs, getenv: func(k string) string { return environ[k] }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve"}, e) }()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d", code)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	base := "http://" + environ["GATEHOUSE_ADDR"]
	waitReady(t, base)
	return base, &logs
}

// readyz returns /readyz's detail.
func readyz(t *testing.T, base string) map[string]string {
	t.Helper()
	res, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var detail map[string]string
	if err := json.NewDecoder(res.Body).Decode(&detail); err != nil {
		t.Fatal(err)
	}
	return detail
}

// waitFor polls cond for up to 30s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("not within 30s: %s", what)
}

// TestIssuerCheckedAtStart: a misconfigured OIDC issuer (here the usual
// trailing slash) is named at start in the log and in /readyz, and a
// refused token's issuer is named in the log.
func TestIssuerCheckedAtStart(t *testing.T) {
	iss := idptest.NewIssuer(t, nil)
	good := idptest.NewIssuer(t, nil)
	cfgFile := filepath.Join(t.TempDir(), "gatehouse.yaml")
	if err := os.WriteFile(cfgFile, []byte("oidc_issuers:\n  - name: good\n    issuer: "+good.URL+"\n    audiences: [gatehouse]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base, logs := serveInProcess(t, map[string]string{
		"GATEHOUSE_ALLOW_INSECURE_ISSUERS": "true",
		"GATEHOUSE_OIDC_ISSUER":            iss.URL + "/", // the discovery document says iss.URL
		"GATEHOUSE_OIDC_AUDIENCE":          "gatehouse",
		"GATEHOUSE_OIDC_NAME":              "corp",
		"GATEHOUSE_CONFIG_FILE":            cfgFile,
	})
	waitFor(t, "the issuer check's /readyz note", func() bool { return readyz(t, base)["identity_provider_corp"] != "" })
	detail := readyz(t, base)
	if note := detail["identity_provider_corp"]; !strings.Contains(note, iss.URL+"/") || !strings.Contains(note, "trailing slash") {
		t.Errorf("/readyz note = %q", note)
	}
	if _, ok := detail["identity_provider_good"]; ok {
		t.Errorf("the good issuer has a note: %v", detail)
	}
	waitFor(t, "the good issuer's log line", func() bool { return strings.Contains(logs.String(), `"issuer":"`+good.URL+`"`) })
	log := logs.String()
	if !strings.Contains(log, "failed its check") || !strings.Contains(log, "differ only by a trailing slash") {
		t.Errorf("the log does not name the failing issuer and the slash:\n%s", log)
	}

	// A token with the issuer's own iss: refused, the log naming its iss
	// and the configured issuer that differs by a slash.
	tok := iss.Sign(iss.Claims("u-1", "gatehouse", map[string]any{"email": "a@acme.com", "email_verified": true}))
	req, _ := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("status %d, want 401", res.StatusCode)
	}
	waitFor(t, "the refusal's log line", func() bool { return strings.Contains(logs.String(), `"token_iss":"`+iss.URL+`"`) })
	if !strings.Contains(logs.String(), "differs from it only by a trailing slash") {
		t.Errorf("the refusal does not name the slash:\n%s", logs.String())
	}
}

// TestPublicURLWarnings: with DATABASE_URL set (production) and no public
// URL from anywhere, the start-up log warns loudly and /readyz says so; a
// platform's variable is used and logged instead.
func TestPublicURLWarnings(t *testing.T) {
	base, logs := serveInProcess(t, map[string]string{})
	if note := readyz(t, base)["public_url"]; !strings.Contains(note, "GATEHOUSE_PUBLIC_URL is not set") || !strings.Contains(note, base) {
		t.Errorf("/readyz public_url note = %q", note)
	}
	if !strings.Contains(logs.String(), `"level":"WARN","msg":"WARNING: GATEHOUSE_PUBLIC_URL is not set`) {
		t.Errorf("no loud warning:\n%s", logs.String())
	}

	base, logs = serveInProcess(t, map[string]string{"FLY_APP_NAME": "gatehouse-test"})
	if note, ok := readyz(t, base)["public_url"]; ok {
		t.Errorf("/readyz warns although Fly's app name gives the URL: %q", note)
	}
	if !strings.Contains(logs.String(), `"public_url":"https://gatehouse-test.fly.dev","from":"FLY_APP_NAME"`) {
		t.Errorf("the log does not say where the public URL came from:\n%s", logs.String())
	}
}

// TestMetricsToken: with GATEHOUSE_METRICS_TOKEN set, /metrics answers only
// that bearer token.
func TestMetricsToken(t *testing.T) {
	token := "metrics token of 32 bytes or more!!"
	base, _ := serveInProcess(t, map[string]string{"GATEHOUSE_METRICS_TOKEN": token})
	for _, tt := range []struct {
		auth string
		want int
	}{{"", 401}, {"Bearer wrong", 401}, {"Bearer " + token[:len(token)-1], 401}, {"Basic " + token, 401}, {"Bearer " + token, 200}} {
		req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tt.want {
			t.Errorf("/metrics with %q: %d, want %d", tt.auth, res.StatusCode, tt.want)
		}
	}
	if res, err := http.Get(base + "/healthz"); err != nil || res.StatusCode != 200 {
		t.Errorf("/healthz needs no token: %v %v", res, err)
	}
}
