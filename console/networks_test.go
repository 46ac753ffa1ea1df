package console_test

import (
	"html"
	"net/http"
	"strings"
	"testing"
)

// TestKeyFormAllowedNetworks: the console's key form takes allowed
// networks (one per line, or separated by commas or spaces), the new key
// works only from them, both key lists show where each key is usable
// from, and a bad entry is refused with the tool's words naming it, with
// no key made.
func TestKeyFormAllowedNetworks(t *testing.T) {
	s := newSite(t, siteOpts{})
	b := s.signedIn("ada-1", "ada@acme.example")
	create := func(name, nets string) page {
		form := b.get("/console/keys").form(t, "/console/keys")
		form.Set("name", name)
		form.Set("role", "developer")
		form["scope"] = []string{"mcp:read", "mcp:write"}
		form.Set("allowed_networks", nets)
		return b.post("/console/keys", form)
	}

	p := create("elsewhere", "10.0.0.0/8\r\n2001:db8::/32, 192.0.2.7")
	m := secretOnPage.FindStringSubmatch(p.body)
	if p.status != http.StatusOK || m == nil {
		t.Fatalf("creating a restricted key: %d\n%s", p.status, p.body)
	}
	// The test's client calls from 127.0.0.1: refused, not as a bad token.
	if code := s.mcpStatus(t, m[1]); code != http.StatusForbidden {
		t.Errorf("a key for 10.0.0.0/8 from 127.0.0.1: %d, want 403", code)
	}
	p = create("here", "127.0.0.1")
	if m := secretOnPage.FindStringSubmatch(p.body); m == nil || s.mcpStatus(t, m[1]) != http.StatusOK {
		t.Errorf("a key for 127.0.0.1 does not work from 127.0.0.1")
	}
	if p := create("anywhere", "  "); secretOnPage.FindStringSubmatch(p.body) == nil {
		t.Errorf("a key with no networks: %d", p.status)
	}
	for _, path := range []string{"/console/keys", "/console/admin/keys"} {
		body := html.UnescapeString(b.get(path).body)
		for _, want := range []string{"Usable from", "10.0.0.0/8, 192.0.2.7/32, 2001:db8::/32", "127.0.0.1/32", "anywhere"} {
			if !strings.Contains(body, want) {
				t.Errorf("%s lacks %q", path, want)
			}
		}
	}

	count := func() string { return s.scalar(t, "SELECT count(*) FROM gatehouse.api_keys") }
	before := count()
	for nets, want := range map[string]string{
		"10.0.0.0/8\n10.0.0.1/8":          `network 2 ("10.0.0.1/8"): has host bits set: write the network 10.0.0.0/8, or the single address 10.0.0.1`,
		"office-lan":                      `network 1 ("office-lan"): not an IP address`,
		"fe80::1%eth0":                    "zone",
		strings.Repeat("10.0.0.0/8 ", 65): "allowed_networks must have at most 64 items",
	} {
		p := create("bad", nets)
		if body := html.UnescapeString(p.body); p.status != http.StatusBadRequest || !strings.Contains(body, want) || secretOnPage.MatchString(p.body) {
			t.Errorf("networks %.30q: %d, want 400 saying %q", nets, p.status, want)
		}
	}
	if after := count(); after != before {
		t.Errorf("%s keys after the refusals, want %s", after, before)
	}
}

// TestAdminSetsKeyNetworks: an admin changes a key's allowed networks on
// the Organisation keys page (set_api_key_networks): the new list applies
// at once, a bad entry is refused naming it and changes nothing, an empty
// field lets the key be used from anywhere; a developer cannot.
func TestAdminSetsKeyNetworks(t *testing.T) {
	s := newSite(t, siteOpts{})
	b := s.signedIn("ada-1", "ada@acme.example")
	form := b.get("/console/keys").form(t, "/console/keys")
	form.Set("name", "ci")
	form.Set("role", "developer")
	form["scope"] = []string{"mcp:read", "mcp:write"}
	form.Set("allowed_networks", "127.0.0.1")
	m := secretOnPage.FindStringSubmatch(b.post("/console/keys", form).body)
	if m == nil {
		t.Fatal("no key made")
	}
	secret := m[1]
	id := s.scalar(t, "SELECT id FROM gatehouse.api_keys WHERE name = 'ci'")
	action := "/console/admin/keys/" + id + "/networks"
	set := func(nets string) page {
		f := b.get("/console/admin/keys").form(t, action)
		f.Set("allowed_networks", nets)
		return b.post(action, f)
	}
	networks := func() string {
		return s.scalar(t, "SELECT allowed_networks::text FROM gatehouse.api_keys WHERE id = $1", id)
	}

	if p := set("10.0.0.0/8\n2001:db8::/32"); p.status != http.StatusOK || !strings.Contains(p.body, "Allowed networks changed") {
		t.Fatalf("setting networks: %d", p.status)
	}
	if got := networks(); got != "{10.0.0.0/8,2001:db8::/32}" {
		t.Errorf("stored %s", got)
	}
	if code := s.mcpStatus(t, secret); code != http.StatusForbidden {
		t.Errorf("the key from 127.0.0.1 after its networks changed: %d, want 403", code)
	}
	p := set("10.0.0.0/8, 10.0.0.1/8")
	if body := html.UnescapeString(p.body); p.status != http.StatusBadRequest || !strings.Contains(body, `network 2 ("10.0.0.1/8"): has host bits set`) {
		t.Errorf("a bad entry: %d", p.status)
	}
	if got := networks(); got != "{10.0.0.0/8,2001:db8::/32}" {
		t.Errorf("a refused change stored %s", got)
	}
	if p := set(""); p.status != http.StatusOK || networks() != "{}" || s.mcpStatus(t, secret) != http.StatusOK {
		t.Errorf("clearing: %d, stored %s", p.status, networks())
	}

	// A developer has no such form and is refused the action.
	dev := s.signedIn("bob-2", "bob@acme.example")
	if p := dev.get("/console/admin/keys"); p.status != http.StatusForbidden {
		t.Errorf("a developer's Organisation keys page: %d", p.status)
	}
	f := b.get("/console/admin/keys").form(t, action)
	f.Set("allowed_networks", "192.0.2.0/24")
	if p := dev.post(action, f); p.status == http.StatusOK || networks() != "{}" {
		t.Errorf("a developer set a key's networks: %d, stored %s", p.status, networks())
	}
}
