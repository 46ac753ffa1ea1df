package clientcert_test

import (
	"crypto/x509"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/identity/clientcert"
	"github.com/gatehouse-mcp/gatehouse/internal/certtest"
)

// TestAllowedNetworks: a service's allowed_networks reach its principal,
// canonical (mapped IPv4 as IPv4), and are enforced per address; a service
// without them is unrestricted.
func TestAllowedNetworks(t *testing.T) {
	ca := certtest.NewCA(t, "Services CA")
	billing := ca.Issue(t, certtest.Options{CommonName: "billing", URIs: []string{"spiffe://acme.com/billing"}, Client: true})
	reports := ca.Issue(t, certtest.Options{CommonName: "reports", Client: true})
	m := parse(t, `
services:
  - name: billing
    uri: spiffe://acme.com/billing
    tenant: acme.com
    role: developer
    allowed_networks: [10.0.0.0/8, "::ffff:192.0.2.0/120", 2001:db8::/32, 203.0.113.7]
  - {name: reports, subject: "CN=reports", tenant: acme.com, role: viewer}
`)
	p, err := m.Principal([]*x509.Certificate{billing.Cert, ca.Cert})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.AllowedNetworks.String(); got != "10.0.0.0/8, 192.0.2.0/24, 203.0.113.7/32, 2001:db8::/32" {
		t.Errorf("billing's networks = %s", got)
	}
	for ip, want := range map[string]bool{"10.1.2.3": true, "::ffff:192.0.2.9": true, "192.0.3.1": false, "2001:db8::1": true, "2001:db9::1": false, "203.0.113.8": false} {
		if p.AllowedNetworks.AllowsIP(ip) != want {
			t.Errorf("billing from %s: allowed %v, want %v", ip, !want, want)
		}
	}
	r, err := m.Principal([]*x509.Certificate{reports.Cert, ca.Cert})
	if err != nil || r.AllowedNetworks.Restricted() {
		t.Errorf("reports (no allowed_networks): %v, %v", r, err)
	}
}

// TestAllowedNetworksMistakes: every bad entry of every service is named
// at start-up, with the map's other problems; an empty list is refused
// rather than read as "anywhere".
func TestAllowedNetworksMistakes(t *testing.T) {
	_, err := clientcert.Parse(strings.NewReader(`
services:
  - {name: a, uri: "spiffe://x/a", tenant: acme.com, role: viewer, allowed_networks: [10.0.0.1/8, office-lan]}
  - {name: b, uri: "spiffe://x/b", tenant: acme.com, role: viewer, allowed_networks: []}
  - {name: c, uri: "spiffe://x/c", tenant: acme.com, role: owner, allowed_networks: ["fe80::1%eth0"]}
  - {name: d, uri: "spiffe://x/d", tenant: acme.com, role: viewer, allowed_networks: "10.0.0.0/8, bad"}
`), rules)
	if err == nil {
		t.Fatal("a bad map was accepted")
	}
	for _, want := range []string{
		`services.a: allowed_networks: network 1 ("10.0.0.1/8"): has host bits set: write the network 10.0.0.0/8`,
		`network 2 ("office-lan"): not an IP address`,
		"services.b: allowed_networks is empty",
		`services.c: role "owner"`,
		`services.c: allowed_networks: network 1 ("fe80::1%eth0")`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// One string of comma-separated networks is read as the list.
	if !strings.Contains(err.Error(), `services.d: allowed_networks: network 2 ("bad")`) {
		t.Errorf("d: %v", err)
	}
	m := parse(t, "services:\n  - {name: a, uri: \"spiffe://x/a\", tenant: acme.com, role: viewer, allowed_networks: \"10.0.0.0/8, 2001:db8::1\"}\n"+
		"  - {name: b, uri: \"spiffe://x/b\", tenant: acme.com, role: viewer, allowed_networks: 192.0.2.0/24}\n")
	if m.Len() != 2 {
		t.Errorf("map of %d services", m.Len())
	}
	if _, err := clientcert.Parse(strings.NewReader("services:\n  - {name: a, uri: \"spiffe://x/a\", tenant: acme.com, role: viewer, allowed_networks: {a: b}}\n"), rules); err == nil {
		t.Error("a mapping as allowed_networks was accepted")
	}
	long := "services:\n  - {name: a, uri: \"spiffe://x/a\", tenant: acme.com, role: viewer, allowed_networks: [" + strings.Repeat("10.0.0.0/8, ", 64) + "10.0.0.0/8]}\n"
	if _, err := clientcert.Parse(strings.NewReader(long), rules); err == nil || !strings.Contains(err.Error(), "at most 64") {
		t.Errorf("65 networks: %v", err)
	}
}
