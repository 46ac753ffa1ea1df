package migrations

import (
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
)

func TestMigrationsLoad(t *testing.T) {
	for _, ms := range [][]Migration{Control(), Tenant()} {
		for i, m := range ms {
			if m.Version != i+1 || m.Name == "" || strings.TrimSpace(m.SQL) == "" {
				t.Errorf("migration %d: %+v", i, m)
			}
		}
	}
}

func TestLoadRejectsBadNames(t *testing.T) {
	for name, fsys := range map[string]fstest.MapFS{
		"gap":     {"d/0001_a.sql": {Data: []byte("x")}, "d/0003_b.sql": {Data: []byte("x")}},
		"dup":     {"d/0001_a.sql": {Data: []byte("x")}, "d/0001_b.sql": {Data: []byte("x")}},
		"unnamed": {"d/0001.sql": {Data: []byte("x")}},
		"short":   {"d/1_a.sql": {Data: []byte("x")}},
		"stray":   {"d/README": {Data: []byte("x")}},
		"empty":   {"d": {Mode: fs.ModeDir | 0o755}},
	} {
		if _, err := load(fsys, "d"); err == nil {
			t.Errorf("%s: load succeeded, want error", name)
		}
	}
}
