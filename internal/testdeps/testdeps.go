// Package testdeps finds the optional external programs that some tests
// drive (PgBouncer, Chromium, Node.js with the end-to-end npm packages), so
// that every such test follows one rule:
//
//   - present: the test runs;
//   - absent: `make test` installs it where it can (see the Makefile's
//     test-deps target) before the tests start, so a test that still finds it
//     missing skips with one line saying what it needed and how to get it;
//   - absent while the environment variable CI is "true": the test fails, so
//     that CI never lands a run that silently skipped part of the suite.
//
// Tests call [Need] and use the path it returns; they never look programs up
// on their own.
package testdeps

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// Dep names one optional external program.
type Dep struct {
	// Name is what the skip message calls it, e.g. "Chromium".
	Name string
	// Find returns the program's absolute path, or "" when it is absent.
	Find func() string
	// How says how a person gets it, e.g. "apt-get install chromium".
	How string
}

// Need returns the path of d's program. When it is absent Need skips t with
// one line naming the test, the program and how to get it, or fails t when
// the environment variable CI is "true".
func Need(t testing.TB, d Dep) string {
	t.Helper()
	if p := d.Find(); p != "" {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s needs %s, which is missing (CI=true turns this skip into a failure); get it with: %s", t.Name(), d.Name, d.How)
	}
	t.Skipf("SKIPPED %s: needs %s; get it with: %s", t.Name(), d.Name, d.How)
	return ""
}

// RepoRoot is the repository's top directory (the one holding go.mod).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func lookPath(names ...string) func() string {
	return func() string {
		for _, n := range names {
			if p, err := exec.LookPath(n); err == nil {
				return p
			}
		}
		return ""
	}
}

// Chromium is a headless-capable Chromium or Chrome browser.
var Chromium = Dep{
	Name: "Chromium",
	Find: lookPath("chromium", "chromium-browser", "google-chrome"),
	How:  "`make test` installs Debian's chromium where apt-get exists; elsewhere install Chromium or Chrome on PATH",
}
