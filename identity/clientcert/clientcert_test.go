package clientcert_test

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/clientcert"
	"github.com/gatehouse-mcp/gatehouse/internal/certtest"
)

var rules = clientcert.Rules{
	Roles: []string{"admin", "developer", "viewer"},
	TenantKey: func(s string) (string, error) {
		if strings.ContainsAny(s, " /@") {
			return "", fmt.Errorf("%q is not a tenant key", s)
		}
		return strings.ToLower(s), nil
	},
	DefaultScopes: func(role string) []string {
		if role == "viewer" {
			return []string{identity.ScopeRead}
		}
		return []string{identity.ScopeRead, identity.ScopeWrite}
	},
}

func parse(t *testing.T, doc string) *clientcert.Map {
	t.Helper()
	m, err := clientcert.Parse(strings.NewReader(doc), rules)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return m
}

func TestPrincipal(t *testing.T) {
	ca := certtest.NewCA(t, "Services CA")
	billing := ca.Issue(t, certtest.Options{CommonName: "billing", URIs: []string{"spiffe://acme.com/billing"}, Client: true})
	reports := ca.Issue(t, certtest.Options{CommonName: "reports", Organization: "Acme, Inc.", Client: true})
	stranger := ca.Issue(t, certtest.Options{CommonName: "stranger", URIs: []string{"spiffe://acme.com/stranger"}, Client: true})
	m := parse(t, `
services:
  - name: billing
    uri: spiffe://acme.com/billing
    tenant: ACME.com
    role: developer
  - name: reports
    subject: "cn=reports, O=Acme\\, Inc."
    tenant: acme.com
    role: viewer
    scopes: [mcp:read]
`)
	p, err := m.Principal([]*x509.Certificate{billing.Cert, ca.Cert})
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != "mtls:billing" || p.Provider != "mtls" || p.TenantKey != "acme.com" || p.Role != "developer" ||
		!slices.Equal(p.Scopes, []string{"mcp:read", "mcp:write"}) || !p.Expiry.Equal(billing.Cert.NotAfter) || p.TenantID != "" {
		t.Errorf("billing's principal = %+v", p)
	}
	// The subject matches however the operator spaced and cased it.
	if reports.Cert.Subject.String() != `CN=reports,O=Acme\, Inc.` {
		t.Fatalf("subject %q", reports.Cert.Subject.String())
	}
	if p, err := m.Principal([]*x509.Certificate{reports.Cert, ca.Cert}); err != nil || p.Subject != "mtls:reports" || p.Role != "viewer" {
		t.Errorf("reports: %+v, %v", p, err)
	}
	// A certificate the map does not name is nobody.
	_, err = m.Principal([]*x509.Certificate{stranger.Cert, ca.Cert})
	if !errors.Is(err, identity.ErrInvalidToken) || !strings.Contains(err.Error(), "not mapped") {
		t.Errorf("unmapped certificate: %v", err)
	}
	if _, err := m.Principal(nil); !errors.Is(err, identity.ErrInvalidToken) {
		t.Errorf("no chain: %v", err)
	}
}

// TestRevoked: a listed certificate is refused although it verifies, by
// fingerprint or serial, and so is every certificate an revoked
// intermediate issued; others of the same service are not.
func TestRevoked(t *testing.T) {
	root := certtest.NewCA(t, "Root")
	inter := root.Intermediate(t, "Issuing CA")
	opts := certtest.Options{CommonName: "billing", URIs: []string{"spiffe://acme.com/billing"}, Client: true}
	leaked, bySerial, renewed := inter.Issue(t, opts), inter.Issue(t, opts), inter.Issue(t, opts)
	chain := func(c *certtest.Cert) []*x509.Certificate { return []*x509.Certificate{c.Cert, inter.Cert, root.Cert} }
	services := `
services:
  - {name: billing, uri: "spiffe://acme.com/billing", tenant: acme.com, role: developer}
`
	serial := fmt.Sprintf("%x", bySerial.Cert.SerialNumber)
	m := parse(t, services+fmt.Sprintf("revoked:\n  - %s\n  - serial:%s\n", clientcert.Fingerprint(leaked.Cert), serial))
	for name, c := range map[string]*certtest.Cert{"by fingerprint": leaked, "by serial": bySerial} {
		if _, err := m.Principal(chain(c)); !errors.Is(err, identity.ErrInvalidToken) || !strings.Contains(err.Error(), "is revoked") {
			t.Errorf("revoked %s: %v", name, err)
		}
	}
	if p, err := m.Principal(chain(renewed)); err != nil || p.Subject != "mtls:billing" {
		t.Errorf("the service's new certificate: %v, %v", p, err)
	}
	// Colon-separated upper-case hex, as openssl prints fingerprints.
	up := strings.ToUpper(strings.TrimPrefix(clientcert.Fingerprint(renewed.Cert), "sha256:"))
	var pairs []string
	for i := 0; i < len(up); i += 2 {
		pairs = append(pairs, up[i:i+2])
	}
	m = parse(t, services+"revoked:\n  - sha256:"+strings.Join(pairs, ":")+"\n")
	if _, err := m.Principal(chain(renewed)); !errors.Is(err, identity.ErrInvalidToken) {
		t.Errorf("fingerprint written as openssl prints it did not revoke: %v", err)
	}
	m = parse(t, services+"revoked:\n  - "+clientcert.Fingerprint(inter.Cert)+"\n")
	if _, err := m.Principal(chain(renewed)); err == nil || !strings.Contains(err.Error(), "Issuing CA, which is revoked") {
		t.Errorf("revoked intermediate: %v", err)
	}
}

// TestAmbiguous: a certificate two services could claim is refused.
func TestAmbiguous(t *testing.T) {
	ca := certtest.NewCA(t, "CA")
	c := ca.Issue(t, certtest.Options{CommonName: "both", URIs: []string{"spiffe://acme.com/a"}, Client: true})
	m := parse(t, `
services:
  - {name: a, uri: "spiffe://acme.com/a", tenant: acme.com, role: viewer}
  - {name: b, subject: "CN=both", tenant: other.com, role: admin}
`)
	if _, err := m.Principal([]*x509.Certificate{c.Cert}); err == nil || !strings.Contains(err.Error(), "matches both a and b") {
		t.Errorf("ambiguous certificate: %v", err)
	}
}

// TestParseListsEveryProblem: a bad map is refused whole, with every
// problem named.
func TestParseListsEveryProblem(t *testing.T) {
	_, err := clientcert.Parse(strings.NewReader(`
services:
  - {uri: "spiffe://x/a", tenant: acme.com, role: developer}
  - {name: b, tenant: "acme com", role: owner, scopes: [mcp:everything]}
  - {name: c, uri: "spiffe://x/a", subject: "CN=c", role: viewer}
  - {name: c, uri: "spiffe://x/a", tenant: acme.com, role: viewer}
revoked:
  - md5:abcd
  - sha256:1234
  - serial:zz
`), rules)
	if err == nil {
		t.Fatal("a bad map was accepted")
	}
	for _, want := range []string{
		"services[0]: name is missing",
		"services.b: give exactly one of uri and subject",
		"services.b: tenant: \"acme com\" is not a tenant key",
		`services.b: role "owner" is not one of admin, developer, viewer`,
		`services.b: scope "mcp:everything"`,
		"services.c: give exactly one of uri and subject",
		"services.c: tenant is missing",
		"services.c: a second service has this name",
		"services.c: uri spiffe://x/a is already",
		`revoked[0]: "md5:abcd"`,
		`revoked[1]: "sha256:1234"`,
		`revoked[2]: "serial:zz"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if _, err := clientcert.Parse(strings.NewReader("services: []\nrevokd: []\n"), rules); err == nil {
		t.Error("a misspelt setting was accepted")
	}
	if m, err := clientcert.Parse(strings.NewReader(""), rules); err != nil || m.Len() != 0 {
		t.Errorf("an empty map (every service cut off) = %v, %v; want a map of none", m, err)
	}
}

// TestRevokedSerialSpellings: a serial number revokes however it is written:
// with or without leading zeros (odd-length hex, as Go's %x prints it), in
// either case, with colons or spaces between bytes (as openssl prints it).
// Other spellings of a non-number are refused at parse time.
func TestRevokedSerialSpellings(t *testing.T) {
	ca := certtest.NewCA(t, "CA")
	opts := certtest.Options{CommonName: "billing", URIs: []string{"spiffe://acme.com/billing"}, Client: true}
	services := "services:\n  - {name: billing, uri: \"spiffe://acme.com/billing\", tenant: acme.com, role: developer}\n"
	// Issue until one serial's hex has an odd number of digits (half do).
	var c *certtest.Cert
	for c == nil || len(fmt.Sprintf("%x", c.Cert.SerialNumber))%2 == 0 {
		c = ca.Issue(t, opts)
	}
	odd := fmt.Sprintf("%x", c.Cert.SerialNumber)
	even := "0" + odd
	var colons []string
	for i := 0; i < len(even); i += 2 {
		colons = append(colons, strings.ToUpper(even[i:i+2]))
	}
	for name, spelled := range map[string]string{
		"odd-length hex":       odd,
		"leading zero":         even,
		"upper case":           strings.ToUpper(odd),
		"openssl colons":       strings.Join(colons, ":"),
		"spaces between bytes": strings.Join(colons, " "),
	} {
		m := parse(t, services+"revoked:\n  - \"serial:"+spelled+"\"\n")
		if _, err := m.Principal([]*x509.Certificate{c.Cert, ca.Cert}); !errors.Is(err, identity.ErrInvalidToken) {
			t.Errorf("%s (%s) did not revoke: %v", name, spelled, err)
		}
	}
	for _, bad := range []string{"serial:", "serial:xyz", "serial:12g4", "serials:abcd", "abcd"} {
		if _, err := clientcert.Parse(strings.NewReader(services+"revoked:\n  - \""+bad+"\"\n"), rules); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}
