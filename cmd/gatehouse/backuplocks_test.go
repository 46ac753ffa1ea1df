package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/store"
)

// TestWatchBackupLocks: a lock table too small for pg_dump of the catalog
// becomes a warning and a /readyz note; the note goes when the setting (or
// the catalog) changes, and a failed check changes nothing.
func TestWatchBackupLocks(t *testing.T) {
	results := []struct {
		b   store.BackupLocks
		err error
	}{
		{store.BackupLocks{Relations: 50_000, Connections: 100, Setting: 64, Needed: store.LocksNeeded(50_000, 100)}, nil},
		{store.BackupLocks{Relations: 51_000, Connections: 100, Setting: 64, Needed: store.LocksNeeded(51_000, 100)}, nil},
		{store.BackupLocks{}, errors.New("database unreachable")},
		{store.BackupLocks{Relations: 51_000, Connections: 100, Setting: 1024, Needed: store.LocksNeeded(51_000, 100)}, nil},
	}
	var mu sync.Mutex
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&syncWriter{w: &logs, mu: &mu}, nil))
	notes := &readyNotes{}
	seen := make(chan map[string]string)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	i := 0
	check := func(context.Context) (store.BackupLocks, error) {
		if i > 0 {
			seen <- notes.snapshot() // what /readyz showed after the previous check
		}
		if i == len(results) {
			cancel()
			return store.BackupLocks{}, context.Canceled
		}
		r := results[i]
		i++
		return r.b, r.err
	}
	done := make(chan struct{})
	go func() { watchBackupLocks(ctx, check, notes, log, time.Millisecond); close(done) }()
	want := []bool{true, true, true, false} // a note after each check
	for k, w := range want {
		got := <-seen
		if _, ok := got["backup"]; ok != w {
			t.Errorf("after check %d: note %v, want %v (%v)", k, ok, w, got)
		}
		if ok := got["backup"]; w && !strings.Contains(ok, "set it to at least 5") {
			t.Errorf("after check %d: note %q does not say what to set", k, ok)
		}
	}
	<-done
	mu.Lock()
	defer mu.Unlock()
	out := logs.String()
	if strings.Count(out, "pg_dump of this database would fail") != 1 || !strings.Contains(out, "database unreachable") ||
		!strings.Contains(out, "covers pg_dump of 51000 relations") {
		t.Errorf("log:\n%s", out)
	}
}

type syncWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func TestLocksNeeded(t *testing.T) {
	for _, c := range []struct{ relations, conns, want int }{
		{0, 100, 64}, {4_800, 100, 64}, {4_801, 100, 65}, {50_000, 100, 516}, {50_284, 100, 519}, {1_091, 5, 235},
	} {
		if got := store.LocksNeeded(c.relations, c.conns); got != c.want {
			t.Errorf("LocksNeeded(%d, %d) = %d, want %d", c.relations, c.conns, got, c.want)
		}
	}
	for _, c := range []struct{ relations, conns, want int }{{300, 100, 64}, {10_000, 100, 256}, {50_284, 100, 1024}} {
		if got := store.EmbeddedLocks(c.relations, c.conns); got != c.want {
			t.Errorf("EmbeddedLocks(%d, %d) = %d, want %d", c.relations, c.conns, got, c.want)
		}
	}
}
