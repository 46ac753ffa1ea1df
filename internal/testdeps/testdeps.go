// Package testdeps finds the optional external programs that some tests
// drive (PgBouncer, Chromium, Node.js with the end-to-end npm packages), so
// that every such test follows one rule:
//
//   - present: the test runs;
//   - absent: `make test` installs it where it can (the Makefile's test-deps
//     target) before the tests start, so a test that still finds it missing
//     skips, and `make test` ends with one line per missing program saying
//     which tests were skipped and how to get it (go test alone hides the
//     skip messages of passing packages; see [LogEnv]);
//   - absent while the environment variable CI is "true": the test fails, so
//     that CI never lands a run that silently skipped part of the suite.
//
// Tests call [Need] and use the path it returns; they never look programs up
// on their own. This package imports nothing from Gatehouse.
package testdeps

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// LogEnv names the environment variable holding the file where [Need]
// appends one line per skipped test ("dep<TAB>test<TAB>how"); `make test`
// sets it and prints a summary of the file after the tests (see
// ./internal/testdeps/skipped).
const LogEnv = "TESTDEPS_SKIP_LOG"

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
// one line naming the test, the program and how to get it (and records the
// skip in the file named by [LogEnv], if set), or fails t when the
// environment variable CI is "true".
func Need(t testing.TB, d Dep) string {
	t.Helper()
	if p := d.Find(); p != "" {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s needs %s, which is missing (CI=true turns this skip into a failure); get it with: %s", t.Name(), d.Name, d.How)
	}
	record(d, t.Name())
	t.Skipf("SKIPPED %s: needs %s; get it with: %s", t.Name(), d.Name, d.How)
	return ""
}

// record appends the skip to the file named by LogEnv. Lines are written
// with one O_APPEND write each, so test binaries running in parallel do not
// interleave them.
func record(d Dep, test string) {
	name := os.Getenv(LogEnv)
	if name == "" {
		return
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return // the skip message itself still says it
	}
	defer f.Close()
	_, _ = fmt.Fprintf(f, "%s\t%s\t%s\n", d.Name, test, d.How)
}

// RepoRoot is the repository's top directory (the one holding go.mod).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// firstOf returns the first path any of finds returns.
func firstOf(finds ...func() string) func() string {
	return func() string {
		for _, f := range finds {
			if p := f(); p != "" {
				return p
			}
		}
		return ""
	}
}

// lookPath finds the first of names on PATH.
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

// executable finds an executable file at path (relative paths are taken
// from the repository's root).
func executable(path string) func() string {
	return func() string {
		if !filepath.IsAbs(path) {
			path = filepath.Join(RepoRoot(), path)
		}
		if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return path
		}
		return ""
	}
}
