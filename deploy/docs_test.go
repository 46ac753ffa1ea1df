package deploy_test

import (
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	docCommand = regexp.MustCompile("(?m)(?:`|/|^\\s*)gatehouse ([a-z][a-z-]*)")
	docMetric  = regexp.MustCompile(`\bgatehouse_[a-z0-9_]+_(?:total|seconds|bytes)(?:_bucket|_sum|_count)?\b`)
	docLink    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	docHeading = regexp.MustCompile(`(?m)^#{1,6} (.+)$`)
)

var deployDocs = []string{"docs/deploy.md", "docs/operations.md", "docs/scaling.md", "README.md"}

// TestDeployDocs: the deployment and operations guides name only real
// variables, commands, metrics, files and sections.
func TestDeployDocs(t *testing.T) {
	f := codeFacts(t)
	for _, doc := range deployDocs {
		src := readRepo(t, doc)
		f.checkEnvTokens(t, doc, src)
		for _, m := range docCommand.FindAllStringSubmatch(src, -1) {
			if !f.commands[m[1]] {
				t.Errorf("%s: `gatehouse %s` is not a command (cmd/gatehouse/main.go)", doc, m[1])
			}
		}
		for _, m := range docMetric.FindAllString(src, -1) {
			name := m
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				name = strings.TrimSuffix(name, suffix)
			}
			if !f.metrics[name] {
				t.Errorf("%s: %s is not a metric in mcp/*.go", doc, m)
			}
		}
		checkLinks(t, doc, src)
	}
	ops := readRepo(t, "docs/operations.md")
	for m := range f.metrics {
		if !strings.Contains(ops, "`"+m+"`") {
			t.Errorf("docs/operations.md does not document the metric %s", m)
		}
	}
	dep := readRepo(t, "docs/deploy.md")
	for _, file := range []string{"fly.toml", "render.yaml", "deploy/railway.json", "deploy/docker-compose.yml", "deploy/helm/gatehouse", "deploy/Dockerfile"} {
		if !strings.Contains(dep, "`"+file+"`") {
			t.Errorf("docs/deploy.md does not mention %s", file)
		}
	}
}

// checkLinks checks relative links: the file exists, and a #section exists
// in the file it points to.
func checkLinks(t *testing.T, doc, src string) {
	t.Helper()
	for _, m := range docLink.FindAllStringSubmatch(src, -1) {
		target := m[1]
		if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
			continue
		}
		file, anchor, _ := strings.Cut(target, "#")
		rel := doc
		if file != "" {
			rel = path.Clean(path.Join(path.Dir(doc), file))
			if _, err := os.Stat(filepath.Join(repoRoot, filepath.FromSlash(rel))); err != nil {
				t.Errorf("%s: link %s: %s does not exist", doc, target, rel)
			}
		}
		if anchor != "" && strings.HasSuffix(rel, ".md") && !hasSection(readRepo(t, rel), anchor) {
			t.Errorf("%s: link %s: no section #%s in %s", doc, target, anchor, rel)
		}
	}
}

// hasSection reports whether a markdown file has a heading whose GitHub
// anchor is anchor.
func hasSection(src, anchor string) bool {
	for _, h := range docHeading.FindAllStringSubmatch(src, -1) {
		var b strings.Builder
		for _, r := range strings.ToLower(strings.TrimSpace(h[1])) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
				b.WriteRune(r)
			}
		}
		if b.String() == anchor {
			return true
		}
	}
	return false
}
