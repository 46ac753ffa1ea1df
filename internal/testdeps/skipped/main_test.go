package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSummary(t *testing.T) {
	name := filepath.Join(t.TempDir(), "skips.log")
	if lines, err := summary(name); err != nil || len(lines) != 0 {
		t.Fatalf("no log: %q, %v; want nothing", lines, err)
	}
	log := "PgBouncer\tTestB\tbrew install pgbouncer\n" +
		"Chromium\tTestCORS/preflight\tapt-get install chromium\n" +
		"not a record\n" +
		"PgBouncer\tTestA\tbrew install pgbouncer\n"
	if err := os.WriteFile(name, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	lines, err := summary(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want one per program:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for i, want := range []string{
		"1 test(s) SKIPPED because Chromium is missing (TestCORS/preflight); get it with: apt-get install chromium",
		"2 test(s) SKIPPED because PgBouncer is missing (TestA, TestB); get it with: brew install pgbouncer",
	} {
		if !strings.HasPrefix(lines[i], "*** PARTIAL TEST RUN: ") || !strings.HasSuffix(lines[i], want) {
			t.Errorf("line %d = %q, want …%q", i, lines[i], want)
		}
	}
}
