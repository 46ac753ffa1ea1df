package deploy_test

import (
	"encoding/json"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
}

type stage struct {
	image, name string
	instrs      []instruction
}

// dockerfile is a parsed Dockerfile: global ARG defaults and the stages.
type dockerfile struct {
	args   map[string]string
	stages []*stage
}

func parseDockerfile(t testing.TB, src string) *dockerfile {
	t.Helper()
	d := &dockerfile{args: map[string]string{}}
	lines := strings.Split(src, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		for strings.HasSuffix(line, `\`) && i+1 < len(lines) {
			i++
			next := strings.TrimSpace(lines[i])
			if strings.HasPrefix(next, "#") {
				continue
			}
			line = strings.TrimSuffix(line, `\`) + " " + next
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{strings.ToUpper(cmd), strings.TrimSpace(args)}
		switch {
		case in.cmd == "FROM":
			f := strings.Fields(in.args)
			s := &stage{image: os.Expand(f[0], func(k string) string { return d.args[k] })}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			d.stages = append(d.stages, s)
		case len(d.stages) == 0 && in.cmd == "ARG":
			k, v, _ := strings.Cut(in.args, "=")
			d.args[k] = v
		case len(d.stages) == 0:
			t.Fatalf("Dockerfile: %s before the first FROM", in.cmd)
		default:
			s := d.stages[len(d.stages)-1]
			s.instrs = append(s.instrs, in)
		}
	}
	if len(d.stages) == 0 {
		t.Fatal("Dockerfile: no FROM")
	}
	return d
}

// all returns the arguments of every instruction cmd of the stage.
func (s *stage) all(cmd string) []string {
	var out []string
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// index is the position of the first instruction cmd whose arguments
// contain substr, or -1.
func (s *stage) index(cmd, substr string) int {
	return slices.IndexFunc(s.instrs, func(in instruction) bool { return in.cmd == cmd && strings.Contains(in.args, substr) })
}

// pairs splits ENV and LABEL arguments (k=v k2="v 2") into a map.
func pairs(args string) map[string]string {
	out := map[string]string{}
	var fields []string
	var cur strings.Builder
	inQuote := false
	for _, r := range args {
		switch {
		case r == '"':
			inQuote = !inQuote
		case (r == ' ' || r == '\t') && !inQuote:
			if cur.Len() > 0 {
				fields = append(fields, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		fields = append(fields, cur.String())
	}
	for _, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		out[k] = v
	}
	return out
}

// execForm parses an exec-form argument list (["a", "b"]) after any --flags.
func execForm(t testing.TB, what, args string) (flags map[string]string, argv []string) {
	t.Helper()
	flags = map[string]string{}
	for strings.HasPrefix(args, "--") {
		f, rest, _ := strings.Cut(args, " ")
		k, v, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		flags[k], args = v, strings.TrimSpace(rest)
	}
	args = strings.TrimPrefix(args, "CMD ") // HEALTHCHECK [flags] CMD [...]
	if err := json.Unmarshal([]byte(args), &argv); err != nil {
		t.Errorf("Dockerfile: %s %s is not in exec form (a JSON array): the image has no shell", what, args)
	}
	return flags, argv
}

func loadDockerfile(t testing.TB) *dockerfile {
	t.Helper()
	return parseDockerfile(t, readRepo(t, "deploy/Dockerfile"))
}

// TestDockerfileBuild: a cached module download, a static build with the
// version stamped, on the Go release go.mod asks for.
func TestDockerfileBuild(t *testing.T) {
	f := codeFacts(t)
	d := loadDockerfile(t)
	if len(d.stages) < 2 {
		t.Fatalf("Dockerfile: %d stage(s), want a build stage and a runtime stage", len(d.stages))
	}
	b := d.stages[0]
	if want := "golang:" + f.goMinor; b.image != want && !strings.HasPrefix(b.image, want+".") && !strings.HasPrefix(b.image, want+"-") {
		t.Errorf("Dockerfile: build stage FROM %s, want %s (go.mod says go %s)", b.image, want, f.goMinor)
	}
	mods, download, src := b.index("COPY", "go.mod go.sum"), b.index("RUN", "go mod download"), b.index("COPY", ". .")
	if mods < 0 || download < mods || src < download {
		t.Error("Dockerfile: want COPY go.mod go.sum, then RUN go mod download, then COPY . . (module layer cached across source edits)")
	}
	build := b.index("RUN", "go build")
	if build < 0 {
		t.Fatal("Dockerfile: no RUN go build in the build stage")
	}
	cmd := b.instrs[build].args
	env := map[string]string{}
	for _, e := range b.all("ENV") {
		for k, v := range pairs(e) {
			env[k] = v
		}
	}
	if !strings.Contains(cmd, "CGO_ENABLED=0") && env["CGO_ENABLED"] != "0" {
		t.Error("Dockerfile: go build without CGO_ENABLED=0: the runtime image has no C library")
	}
	for _, want := range []string{"-trimpath", "-X main.version=${VERSION}", "./cmd/gatehouse"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("Dockerfile: go build lacks %q: %s", want, cmd)
		}
	}
	for _, arg := range []string{"VERSION", "RENDER_GIT_COMMIT", "RAILWAY_GIT_COMMIT_SHA"} {
		// Render and Railway pass the commit they build to a Dockerfile
		// that declares these; docker build and fly deploy pass VERSION.
		if i := b.index("ARG", arg); i < 0 || i > build {
			t.Errorf("Dockerfile: no ARG %s before go build in the build stage", arg)
		}
	}
	for _, want := range []string{"${RENDER_GIT_COMMIT", "${RAILWAY_GIT_COMMIT_SHA"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("Dockerfile: go build's version ignores %s}", want)
		}
	}
	if !strings.Contains(readRepo(t, "cmd/gatehouse/main.go"), "\nvar version =") {
		t.Error("cmd/gatehouse/main.go: no package-level var version for -X main.version")
	}
}

// TestDockerfileRuntime: static, non-root, no shell, the healthcheck
// command, the serve command, port and labels.
func TestDockerfileRuntime(t *testing.T) {
	f := codeFacts(t)
	d := loadDockerfile(t)
	r := d.stages[len(d.stages)-1]
	if !strings.HasPrefix(r.image, "gcr.io/distroless/static") || !strings.HasSuffix(r.image, ":nonroot") {
		t.Errorf("Dockerfile: runtime FROM %s, want gcr.io/distroless/static-*:nonroot", r.image)
	}
	if i := r.index("COPY", "/gatehouse"); i < 0 || !strings.HasPrefix(r.instrs[i].args, "--from="+d.stages[0].name+" ") {
		t.Errorf("Dockerfile: no COPY --from=%s of the binary to /gatehouse", d.stages[0].name)
	}
	users := r.all("USER")
	if len(users) == 0 {
		t.Error("Dockerfile: no USER in the runtime stage")
	}
	for _, u := range users {
		if name, _, _ := strings.Cut(u, ":"); name == "root" || name == "0" {
			t.Errorf("Dockerfile: USER %s: the server must not run as root", u)
		}
	}
	env := map[string]string{}
	for _, e := range r.all("ENV") {
		for k, v := range pairs(e) {
			f.checkVar(t, "Dockerfile ENV", k)
			env[k] = v
		}
	}
	if env["PORT"] != strconv.Itoa(f.port) {
		t.Errorf("Dockerfile: ENV PORT=%q, want %d", env["PORT"], f.port)
	}
	if exposed := r.all("EXPOSE"); !slices.Equal(exposed, []string{strconv.Itoa(f.port)}) {
		t.Errorf("Dockerfile: EXPOSE %v, want [%d]", exposed, f.port)
	}
	checkDockerCommands(t, f, r)
	labels := map[string]string{}
	for _, l := range r.all("LABEL") {
		for k, v := range pairs(l) {
			labels[k] = v
		}
	}
	for _, k := range []string{"title", "description", "source", "licenses", "version"} {
		if labels["org.opencontainers.image."+k] == "" {
			t.Errorf("Dockerfile: no LABEL org.opencontainers.image.%s", k)
		}
	}
	if labels["org.opencontainers.image.version"] != "${VERSION}" || r.index("ARG", "VERSION") < 0 {
		t.Error("Dockerfile: the version label must be ${VERSION}, with ARG VERSION in the runtime stage")
	}
	f.checkEnvTokens(t, "Dockerfile", readRepo(t, "deploy/Dockerfile"))
}

func checkDockerCommands(t *testing.T, f *facts, r *stage) {
	hc := r.all("HEALTHCHECK")
	if len(hc) != 1 {
		t.Fatalf("Dockerfile: %d HEALTHCHECK instructions, want 1", len(hc))
	}
	flags, argv := execForm(t, "HEALTHCHECK", hc[0])
	f.checkCommand(t, "Dockerfile HEALTHCHECK", argv, "healthcheck")
	if len(argv) == 0 || argv[0] != "/gatehouse" {
		t.Errorf("Dockerfile: HEALTHCHECK %v does not run /gatehouse", argv)
	}
	for _, k := range []string{"interval", "timeout", "start-period"} {
		if d, err := time.ParseDuration(flags[k]); err != nil || d <= 0 {
			t.Errorf("Dockerfile: HEALTHCHECK --%s=%q, want a duration", k, flags[k])
		}
	}
	entry, cmd := r.all("ENTRYPOINT"), r.all("CMD")
	if len(entry) != 1 || len(cmd) != 1 {
		t.Fatalf("Dockerfile: want one ENTRYPOINT and one CMD, got %v and %v", entry, cmd)
	}
	if _, argv := execForm(t, "ENTRYPOINT", entry[0]); !slices.Equal(argv, []string{"/gatehouse"}) {
		t.Errorf(`Dockerfile: ENTRYPOINT %v, want ["/gatehouse"] (fly.toml's release_command relies on it)`, argv)
	}
	_, argv = execForm(t, "CMD", cmd[0])
	f.checkCommand(t, "Dockerfile CMD", argv, "serve")
}

// ignorePatterns reads an ignore file's patterns.
func ignorePatterns(t *testing.T, file string) []string {
	t.Helper()
	var patterns []string
	for _, l := range strings.Split(readRepo(t, file), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	return patterns
}

// localState are files a developer's checkout has after `make run` and
// `make test` that must never reach an image build: the embedded database
// (API key hashes, audit keys), npm packages, build output.
var localState = []string{
	".gatehouse/pgdata/PG_VERSION",
	".gatehouse/pgdata/base/1/1259",
	"node_modules/left-pad/index.js",
	"cmd/gatehouse/testdata/e2e/node_modules/@modelcontextprotocol/inspector/package.json",
	"bin/gatehouse",
}

// checkContextExcludesLocalState: with these patterns, no local state is in
// the build context.
func checkContextExcludesLocalState(t *testing.T, where string, patterns []string) {
	t.Helper()
	for _, p := range localState {
		if !slices.ContainsFunc(patterns, func(pat string) bool { return ignores(strings.TrimSuffix(strings.TrimPrefix(pat, "/"), "/"), p) }) {
			t.Errorf("%s: %s would be in the build context", where, p)
		}
	}
}

// TestGitignoreKeepsLocalStateOutOfGitBuilds: Render and Railway build from
// a clone of the repository, so what .gitignore lists never reaches them.
func TestGitignoreKeepsLocalStateOutOfGitBuilds(t *testing.T) {
	var patterns []string
	for _, p := range ignorePatterns(t, ".gitignore") {
		// gitignore: a pattern with no slash but a trailing one matches at
		// any depth; a leading slash anchors it at the root.
		p = strings.TrimSuffix(p, "/")
		if !strings.Contains(p, "/") {
			p = "**/" + p
		}
		patterns = append(patterns, p)
	}
	checkContextExcludesLocalState(t, ".gitignore (Render, Railway)", patterns)
}

// TestDockerignore: the BuildKit ignore file next to the Dockerfile keeps
// local state out of the context and nothing the build needs.
func TestDockerignore(t *testing.T) {
	patterns := ignorePatterns(t, "deploy/Dockerfile.dockerignore")
	checkContextExcludesLocalState(t, "deploy/Dockerfile.dockerignore", patterns)
	for _, want := range []string{".git", ".gatehouse", "bin", "node_modules", "**/testdata/e2e/node_modules"} {
		if !slices.Contains(patterns, want) {
			t.Errorf("deploy/Dockerfile.dockerignore lacks %s", want)
		}
	}
	needed := []string{"go.mod", "go.sum", "cmd/gatehouse/main.go", "migrations/control/0001_tenants_members_api_keys.sql", "store/db.go", "mcp/http.go"}
	for _, p := range patterns {
		for _, n := range needed {
			if ignores(p, n) {
				t.Errorf("deploy/Dockerfile.dockerignore: %q excludes %s, which the build needs", p, n)
			}
		}
	}
}

// ignores approximates .dockerignore matching: the pattern matches the path
// or one of its parent directories; a leading **/ matches at any depth.
func ignores(pattern, p string) bool {
	anyDepth := strings.HasPrefix(pattern, "**/")
	pattern = strings.TrimPrefix(pattern, "**/")
	parts := strings.Split(p, "/")
	for i := range parts {
		for j := i + 1; j <= len(parts); j++ {
			if i > 0 && !anyDepth {
				break
			}
			if ok, _ := path.Match(pattern, strings.Join(parts[i:j], "/")); ok {
				return true
			}
		}
	}
	return false
}
