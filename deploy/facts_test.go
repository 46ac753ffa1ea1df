package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// repoRoot is the repository root, seen from this package's directory (go
// test runs each package in its own directory).
const repoRoot = ".."

// facts are what the code says, read from the source files themselves, so
// that the deploy files are checked against the code and not against a copy.
type facts struct {
	vars     map[string]string // environment variable -> default (docs/configuration.md)
	routes   map[string]bool   // GET routes (mcp/http.go)
	commands map[string]bool   // gatehouse commands (cobra Use lines in cmd/gatehouse)
	metrics  map[string]bool   // Prometheus series names (mcp/*.go)
	port     int               // the listen port without GATEHOUSE_ADDR or PORT (cmd/gatehouse/config.go)
	grace    time.Duration     // GATEHOUSE_SHUTDOWN_GRACE's default
	goMinor  string            // "1.26" from go.mod
}

// margin is how much longer than the drain a platform must wait before it
// kills the process.
const margin = 5 * time.Second

var (
	configRow   = regexp.MustCompile("(?m)^\\| `([A-Z][A-Z0-9_]*)` \\| (?:`([^`]*)`)? *\\|")
	getRoute    = regexp.MustCompile(`\be\.GET\("([^"]+)"`)
	useLine     = regexp.MustCompile(`(?:\bUse:\s*|\bgroup\()"([a-z]+)`)
	metricName  = regexp.MustCompile(`Name:\s*"(gatehouse_[a-z0-9_]+)"`)
	defaultAddr = regexp.MustCompile(`c\.Addr = ":(\d+)"`)
	goDirective = regexp.MustCompile(`(?m)^go (\d+\.\d+)`)
	envToken    = regexp.MustCompile(`\b(GATEHOUSE_[A-Z0-9_]*[A-Z0-9]|DATABASE_URL)\b`)
)

var loadFacts = sync.OnceValues(func() (*facts, error) {
	f := &facts{vars: map[string]string{}, routes: map[string]bool{}, commands: map[string]bool{}, metrics: map[string]bool{}}
	read := func(rel string) (string, error) {
		b, err := os.ReadFile(filepath.Join(repoRoot, rel))
		return string(b), err
	}
	src, err := read("docs/configuration.md")
	if err != nil {
		return nil, err
	}
	for _, m := range configRow.FindAllStringSubmatch(src, -1) {
		f.vars[m[1]] = m[2]
	}
	if src, err = read("mcp/http.go"); err != nil {
		return nil, err
	}
	for _, m := range getRoute.FindAllStringSubmatch(src, -1) {
		f.routes[m[1]] = true
	}
	// Commands are cobra commands: the first word of each Use (or group)
	// in the command's files (subcommand names too, which is harmless
	// here), and the help and completion commands cobra adds.
	f.commands["help"], f.commands["completion"] = true, true
	files, err := filepath.Glob(filepath.Join(repoRoot, "cmd/gatehouse/*.go"))
	if err != nil {
		return nil, err
	}
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		for _, m := range useLine.FindAllStringSubmatch(string(b), -1) {
			f.commands[m[1]] = true
		}
	}
	// Metrics: mcp/metrics.go, and the features that keep theirs beside
	// their code (mcp/semantic.go).
	mcpFiles, err := filepath.Glob(filepath.Join(repoRoot, "mcp/*.go"))
	if err != nil {
		return nil, err
	}
	for _, file := range mcpFiles {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		for _, m := range metricName.FindAllStringSubmatch(string(b), -1) {
			f.metrics[m[1]] = true
		}
	}
	if src, err = read("cmd/gatehouse/config.go"); err != nil {
		return nil, err
	}
	if m := defaultAddr.FindStringSubmatch(src); m != nil {
		f.port, _ = strconv.Atoi(m[1])
	}
	f.grace, _ = time.ParseDuration(f.vars["GATEHOUSE_SHUTDOWN_GRACE"])
	if src, err = read("go.mod"); err != nil {
		return nil, err
	}
	if m := goDirective.FindStringSubmatch(src); m != nil {
		f.goMinor = m[1]
	}
	return f, nil
})

// codeFacts returns the facts, failing the test if the code cannot be read
// or no longer has the shape these tests rely on.
func codeFacts(t testing.TB) *facts {
	t.Helper()
	f, err := loadFacts()
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case len(f.vars) < 10:
		t.Fatalf("docs/configuration.md: found %d variables in its table; has its format changed?", len(f.vars))
	case !f.routes["/healthz"] || !f.routes["/readyz"]:
		t.Fatalf("mcp/http.go: no e.GET routes /healthz and /readyz (found %v)", keys(f.routes))
	case !f.commands["serve"] || !f.commands["migrate"] || !f.commands["healthcheck"]:
		t.Fatalf("cmd/gatehouse: commands serve, migrate and healthcheck not found (found %v)", keys(f.commands))
	case f.port == 0:
		t.Fatal(`cmd/gatehouse/config.go: no default listen address c.Addr = ":<port>"`)
	case f.grace <= 0:
		t.Fatalf("docs/configuration.md: GATEHOUSE_SHUTDOWN_GRACE has no duration default (%q)", f.vars["GATEHOUSE_SHUTDOWN_GRACE"])
	case len(f.metrics) == 0:
		t.Fatal("mcp/*.go: no gatehouse_* metric names found")
	case f.goMinor == "":
		t.Fatal("go.mod: no go directive")
	}
	return f
}

// readRepo reads a file by its path from the repository root.
func readRepo(t testing.TB, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// existsInRepo fails the test unless rel names a file in the repository.
func existsInRepo(t testing.TB, where, rel string) {
	t.Helper()
	if st, err := os.Stat(filepath.Join(repoRoot, filepath.FromSlash(rel))); err != nil || st.IsDir() {
		t.Errorf("%s: %s is not a file in the repository", where, rel)
	}
}

// checkVar reports a name Gatehouse does not read.
func (f *facts) checkVar(t testing.TB, where, name string) {
	t.Helper()
	if _, ok := f.vars[name]; !ok {
		t.Errorf("%s: %s is not a Gatehouse environment variable (not in docs/configuration.md)", where, name)
	}
}

// checkEnvTokens checks every GATEHOUSE_* and DATABASE_URL token in text,
// comments included: a renamed variable must not survive in any file.
func (f *facts) checkEnvTokens(t testing.TB, where, text string) {
	t.Helper()
	for _, m := range envToken.FindAllString(text, -1) {
		f.checkVar(t, where, m)
	}
}

// checkHealthPath reports a health path that is not /healthz or /readyz, or
// that the server does not serve.
func (f *facts) checkHealthPath(t testing.TB, where, path string, want ...string) {
	t.Helper()
	if path != "/healthz" && path != "/readyz" {
		t.Errorf("%s: health check path %q, want /healthz or /readyz", where, path)
	} else if !f.routes[path] {
		t.Errorf("%s: %s is not a route in mcp/http.go", where, path)
	}
	if len(want) > 0 && !slices.Contains(want, path) {
		t.Errorf("%s: health check path %q, want %v", where, path, want)
	}
}

// checkCommand reports argv whose command is not want, or not a real
// gatehouse command. The binary's own path may come first.
func (f *facts) checkCommand(t testing.TB, where string, argv []string, want string) {
	t.Helper()
	if len(argv) > 0 && argv[0] == "/gatehouse" {
		argv = argv[1:]
	}
	switch {
	case len(argv) == 0:
		t.Errorf("%s: empty command, want %q", where, want)
	case argv[0] != want:
		t.Errorf("%s: command %q, want %q", where, strings.Join(argv, " "), want)
	case !f.commands[argv[0]]:
		t.Errorf("%s: %q is not a gatehouse command (cmd/gatehouse/main.go)", where, argv[0])
	}
}

// checkStopTime reports a SIGTERM-to-SIGKILL time too short for the drain.
func (f *facts) checkStopTime(t testing.TB, where string, got time.Duration) {
	t.Helper()
	if want := f.grace + margin; got < want {
		t.Errorf("%s: %v between SIGTERM and SIGKILL, want at least %v (GATEHOUSE_SHUTDOWN_GRACE %v + %v)", where, got, want, f.grace, margin)
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
