package reload_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/reload"
)

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// TestReload: a change is picked up at the next look after the interval,
// a broken file is reported once and leaves the last good value, and
// fixing it takes effect.
func TestReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "n")
	write(t, path, "1")
	var parses atomic.Int32
	var failures []error
	var mu sync.Mutex
	v, err := reload.New([]string{path}, 20*time.Millisecond, func() (int, error) {
		parses.Add(1)
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(strings.TrimSpace(string(b)))
	}, func(err error) { mu.Lock(); failures = append(failures, err); mu.Unlock() })
	if err != nil || v.Get() != 1 {
		t.Fatalf("New = %v, %v", v, err)
	}
	// Unchanged files are not parsed again, however often they are read.
	for range 10 {
		v.Get()
		time.Sleep(5 * time.Millisecond)
	}
	if n := parses.Load(); n != 1 {
		t.Errorf("unchanged file parsed %d times", n)
	}

	write(t, path, "22")
	eventually(t, func() bool { return v.Get() == 22 })

	write(t, path, "not a number")
	time.Sleep(40 * time.Millisecond)
	for range 5 {
		if got := v.Get(); got != 22 {
			t.Fatalf("after a broken write Get = %d, want the last good 22", got)
		}
		time.Sleep(25 * time.Millisecond)
	}
	mu.Lock()
	if len(failures) != 1 {
		t.Errorf("a broken file was reported %d times, want once: %v", len(failures), failures)
	}
	mu.Unlock()

	write(t, path, "333")
	if !v.Reload() || v.Get() != 333 {
		t.Errorf("Reload after a fix: Get = %d", v.Get())
	}
	if v.Reload() {
		t.Error("Reload with nothing changed reported a new value")
	}
}

func TestFirstParseMustSucceed(t *testing.T) {
	_, err := reload.New([]string{"/nonexistent"}, time.Second, func() (int, error) { return 0, errors.New("boom") }, nil)
	if err == nil || err.Error() != "boom" {
		t.Errorf("New = %v, want the parse error", err)
	}
}

func eventually(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatal("condition not met within 2s")
}
