// Package reload keeps a value parsed from files current while the process
// runs: a TLS certificate renewed by cert-manager or certbot, a client CA
// bundle, the client certificate map.
//
// Get is on the hot path (every TLS handshake, every mTLS request), so it is
// an atomic load; at most once per interval one caller stats the files and,
// when a modification time or size changed, parses them again. Files are
// stat'ed through symlinks, so Kubernetes' atomic secret updates (a symlink
// swapped to a new directory) are seen. A parse that fails is reported and
// the last good value stays in force: a half-written or broken file never
// takes a working server down. The first parse, at start-up, must succeed.
package reload

import (
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Value is a T parsed from files, re-parsed when they change.
type Value[T any] struct {
	paths  []string
	every  time.Duration
	parse  func() (T, error)
	failed func(error)

	cur     atomic.Pointer[T]
	checked atomic.Int64 // unix nanoseconds of the last look at the files
	mu      sync.Mutex   // one reloader at a time; others keep the current value
	stamps  []stamp
}

type stamp struct {
	mod  time.Time
	size int64
}

// New parses the files once and returns the value that keeps them current.
// failed hears about every later parse that fails (nil: ignored).
func New[T any](paths []string, every time.Duration, parse func() (T, error), failed func(error)) (*Value[T], error) {
	v := &Value[T]{paths: paths, every: every, parse: parse, failed: failed}
	v.stamps = v.stat()
	t, err := parse()
	if err != nil {
		return nil, err
	}
	v.cur.Store(&t)
	v.checked.Store(time.Now().UnixNano())
	return v, nil
}

// Get returns the current value, first re-parsing the files if they changed
// and were not looked at within the interval.
func (v *Value[T]) Get() T {
	if now := time.Now().UnixNano(); now-v.checked.Load() >= int64(v.every) && v.mu.TryLock() {
		v.check(now)
		v.mu.Unlock()
	}
	return *v.cur.Load()
}

// Reload re-parses the files now if they changed, and reports whether a new
// value took effect.
func (v *Value[T]) Reload() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.check(time.Now().UnixNano())
}

func (v *Value[T]) check(now int64) bool {
	v.checked.Store(now)
	stamps := v.stat()
	if slices.Equal(stamps, v.stamps) {
		return false
	}
	// A failure is reported once per change of the files: a writer between
	// two files (a new certificate, its key not yet) changes them again.
	v.stamps = stamps
	t, err := v.parse()
	if err != nil {
		if v.failed != nil {
			v.failed(err)
		}
		return false
	}
	v.cur.Store(&t)
	return true
}

func (v *Value[T]) stat() []stamp {
	out := make([]stamp, len(v.paths))
	for i, p := range v.paths {
		if fi, err := os.Stat(p); err == nil {
			out[i] = stamp{fi.ModTime(), fi.Size()}
		}
	}
	return out
}
