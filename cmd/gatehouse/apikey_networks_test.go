package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// TestAPIKeyCreateAllowIP: --allow-ip, repeated and comma-separated, is
// stored canonical and shown by create and list (JSON and table).
func TestAPIKeyCreateAllowIP(t *testing.T) {
	environ := map[string]string{"DATABASE_URL": storetest.ConnString(t)}
	code, out, stderr := gh(t, environ, "apikey", "create", "--tenant", "acme.com", "--role", "developer", "--name", "ci",
		"--allow-ip", "10.0.0.0/8, 203.0.113.7", "--allow-ip", "2001:DB8::/32", "--allow-ip", "::ffff:192.0.2.0/120", "--json")
	var created keyJSON
	if err := json.Unmarshal([]byte(out), &created); code != 0 || err != nil {
		t.Fatalf("create: exit %d, %q, %s", code, out, stderr)
	}
	want := []string{"10.0.0.0/8", "192.0.2.0/24", "203.0.113.7/32", "2001:db8::/32"}
	if !slices.Equal(created.AllowedNetworks, want) {
		t.Errorf("created allowed_networks = %q, want %q", created.AllowedNetworks, want)
	}
	if !strings.Contains(stderr, "usable from 10.0.0.0/8, 192.0.2.0/24, 203.0.113.7/32, 2001:db8::/32") {
		t.Errorf("stderr does not say where the key is usable from: %s", stderr)
	}
	if code, _, stderr := gh(t, environ, "apikey", "create", "--tenant", "acme.com", "--role", "viewer"); code != 0 || !strings.Contains(stderr, "usable from anywhere") {
		t.Errorf("unrestricted: exit %d, %s", code, stderr)
	}
	_, out, _ = gh(t, environ, "apikey", "list", "--tenant", "acme.com", "--json")
	var keys []keyJSON
	if err := json.Unmarshal([]byte(out), &keys); err != nil || len(keys) != 2 {
		t.Fatalf("list: %q", out)
	}
	for _, k := range keys {
		if k.ID == created.ID && !slices.Equal(k.AllowedNetworks, want) || k.ID != created.ID && len(k.AllowedNetworks) != 0 || k.AllowedNetworks == nil {
			t.Errorf("listed %s with allowed_networks %q", k.ID, k.AllowedNetworks)
		}
	}
	_, out, _ = gh(t, environ, "apikey", "list", "--tenant", "acme.com")
	if !strings.Contains(out, "ALLOWED NETWORKS") || !strings.Contains(out, "10.0.0.0/8, 192.0.2.0/24, 203.0.113.7/32, 2001:db8::/32") || !strings.Contains(out, "anywhere") {
		t.Errorf("list table:\n%s", out)
	}
}

// TestAPIKeyCreateAllowIPMistakes: each bad --allow-ip value is named, with
// the other mistakes, exit 2, before any database work; an empty value (an
// unset shell variable) never means "anywhere".
func TestAPIKeyCreateAllowIPMistakes(t *testing.T) {
	t.Chdir(t.TempDir()) // a mistake that reached the embedded database would leave ./.gatehouse here
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--allow-ip", "10.0.0.1/8"}, []string{`--allow-ip: network 1 ("10.0.0.1/8"): has host bits set: write the network 10.0.0.0/8, or the single address 10.0.0.1`}},
		{[]string{"--allow-ip", "10.0.0.0/8,office", "--allow-ip", "fe80::1%eth0"}, []string{`network 2 ("office"): not an IP address`, `network 3 ("fe80::1%eth0")`, "zone"}},
		{[]string{"--allow-ip", "10.0.0.0/33"}, []string{`network 1 ("10.0.0.0/33"): not a network`}},
		{[]string{"--allow-ip", ""}, []string{"--allow-ip: an empty value"}},
		{[]string{"--allow-ip", " , "}, []string{"--allow-ip: an empty value"}},
		{[]string{"--allow-ip", strings.Repeat("10.0.0.0/8,", 65)}, []string{"at most 64"}},
		{[]string{"--role", "owner", "--allow-ip", "bad"}, []string{"unknown role", `network 1 ("bad")`}},
	} {
		args := append([]string{"apikey", "create", "--tenant", "acme.com", "--role", "viewer"}, tc.args...)
		code, stdout, stderr := gh(t, nil, args...)
		if code != 2 || stdout != "" {
			t.Errorf("%q: exit %d, stdout %q", tc.args, code, stdout)
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%q: stderr lacks %q:\n%s", tc.args, w, stderr)
			}
		}
	}
}
