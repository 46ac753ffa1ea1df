package testdeps

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var missing = Dep{Name: "Frobnicator", Find: func() string { return "" }, How: "apt-get install frobnicator"}

// TestNeedSkipsAndRecords: a missing program skips the test and records
// the skip for make's summary line.
func TestNeedSkipsAndRecords(t *testing.T) {
	t.Setenv("CI", "")
	log := filepath.Join(t.TempDir(), "skips.log")
	t.Setenv(LogEnv, log)
	var sub *testing.T
	t.Run("needs it", func(t *testing.T) {
		sub = t
		Need(t, missing)
		t.Error("Need returned for a missing program")
	})
	if !sub.Skipped() {
		t.Error("the test was not skipped")
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if want := "Frobnicator\tTestNeedSkipsAndRecords/needs_it\tapt-get install frobnicator\n"; string(b) != want {
		t.Errorf("skip log %q, want %q", b, want)
	}
}

// TestNeedFailsUnderCI: with CI=true a missing program fails the test (run
// in a child process, since the failure is the point).
func TestNeedFailsUnderCI(t *testing.T) {
	if os.Getenv("TESTDEPS_CHILD") == "1" {
		Need(t, missing)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestNeedFailsUnderCI$", "-test.v")
	cmd.Env = append(os.Environ(), "TESTDEPS_CHILD=1", "CI=true", LogEnv+"=")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--- FAIL") || !strings.Contains(string(out), "CI=true turns this skip into a failure") {
		t.Errorf("under CI=true Need did not fail the test (%v):\n%s", err, out)
	}
}

// TestPgBouncerFromPath: a pgbouncer on PATH (Homebrew's) comes first.
func TestPgBouncerFromPath(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "pgbouncer")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	if got := PgBouncer.Find(); got != fake {
		t.Errorf("PgBouncer.Find() = %q, want %q", got, fake)
	}
}
