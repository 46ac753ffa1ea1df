package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestDocumentedNpxCommandsArePinned checks that every `npx` command in
// README.md and docs/*.md runs without a prompt (-y: without a terminal npx
// would wait) and names the exact version of a package the end-to-end tests
// pin in testdata/e2e/package.json (and that any other package@version of
// those packages in the docs, and the first-start banner's Inspector, is
// the pinned one), so that the documented command is the
// one the tests run (an unpinned `npx @modelcontextprotocol/inspector`
// picks Inspector 0.x on Node 20, which fails against a URL).
func TestDocumentedNpxCommandsArePinned(t *testing.T) {
	var pkg struct{ Dependencies map[string]string }
	b, err := os.ReadFile("testdata/e2e/package.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		t.Fatal(err)
	}
	docs, _ := filepath.Glob("../../docs/*.md")
	docs = append(docs, "../../README.md")
	npx := regexp.MustCompile("npx [-@][^`\n]*")
	pinned := regexp.MustCompile(`^npx -y (@?[a-z0-9@/._-]+?)@([0-9][^ ]*)( |$)`)
	found := 0
	for _, name := range docs {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, cmd := range npx.FindAllString(string(b), -1) {
			found++
			m := pinned.FindStringSubmatch(cmd)
			if m == nil {
				t.Errorf("%s: %q is not `npx -y <package>@<version>`", name, cmd)
				continue
			}
			if want, ok := pkg.Dependencies[m[1]]; !ok || want != m[2] {
				t.Errorf("%s: %q runs %s@%s; the tests pin %q", name, cmd, m[1], m[2], want)
			}
		}
	}
	// Any other mention of a pinned package with a version (e.g. in a JSON
	// args list) names the pinned version too.
	for _, name := range docs {
		b, _ := os.ReadFile(name)
		for pkgName, version := range pkg.Dependencies {
			re := regexp.MustCompile(regexp.QuoteMeta(pkgName) + `@([0-9][0-9A-Za-z.-]*)`)
			for _, m := range re.FindAllStringSubmatch(string(b), -1) {
				if m[1] != version {
					t.Errorf("%s names %s; the tests pin %s@%s", name, m[0], pkgName, version)
				}
			}
		}
	}
	// The first-start banner's Inspector command runs the pinned version.
	if want := pkg.Dependencies["@modelcontextprotocol/inspector"]; inspectorVersion != want {
		t.Errorf("the banner runs Inspector %s; the tests pin %s", inspectorVersion, want)
	}
	if found == 0 {
		t.Error("no npx command found in the docs; the pattern is stale")
	}
}
