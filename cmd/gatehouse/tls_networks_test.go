package main

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/certtest"
)

// TestMutualTLSAllowedNetworks runs the binary with a certificate map
// whose services carry allowed_networks: a service limited to other
// networks is refused from here (127.0.0.1) with 403, not as a bad
// credential, and audited DENIED with the address; one whose list
// includes this address is served. A map with a bad entry stops the
// start-up naming it.
func TestMutualTLSAllowedNetworks(t *testing.T) {
	dir := t.TempDir()
	serverCA := certtest.NewCA(t, "Gatehouse test server CA")
	server := serverCA.Issue(t, certtest.Options{CommonName: "localhost", DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	certFile, keyFile := server.Write(t, dir, "server")
	servicesCA := certtest.NewCA(t, "Acme services CA")
	billing := servicesCA.Issue(t, certtest.Options{CommonName: "billing", URIs: []string{"spiffe://acme.com/billing"}, Client: true})
	reports := servicesCA.Issue(t, certtest.Options{CommonName: "reports", URIs: []string{"spiffe://acme.com/reports"}, Client: true})
	caFile := filepath.Join(dir, "clients-ca.pem")
	certtest.WriteFile(t, caFile, servicesCA.PEM)
	mapFile := filepath.Join(dir, "client-certs.yaml")
	certtest.WriteFile(t, mapFile, []byte(`
services:
  - {name: billing, uri: "spiffe://acme.com/billing", tenant: acme.com, role: developer, allowed_networks: [10.8.0.0/16, "2001:db8::/32"]}
  - {name: reports, uri: "spiffe://acme.com/reports", tenant: acme.com, role: viewer, allowed_networks: "10.8.0.0/16, 127.0.0.1"}
`))
	s := runBinary(t, "GATEHOUSE_TLS_CERT="+certFile, "GATEHOUSE_TLS_KEY="+keyFile,
		"GATEHOUSE_CLIENT_CA="+caFile, "GATEHOUSE_CLIENT_CERT_MAP="+mapFile)
	roots := x509.NewCertPool()
	roots.AddCert(serverCA.Cert)
	client := func(c *certtest.Cert) *http.Client {
		cfg := &tls.Config{RootCAs: roots, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c.TLS, nil }}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	}
	r, err := callTool(client(billing), s.base, "", "whoami", nil)
	if err != nil || r.status != http.StatusForbidden || r.challenge != "" || !strings.Contains(r.text, "-32032") ||
		!strings.Contains(r.text, "the client certificate's service billing is not allowed from this network (your address is 127.0.0.1)") ||
		strings.Contains(r.text, "10.8.0.0") {
		t.Errorf("billing from 127.0.0.1: %+v %v", r, err)
	}
	if r, err := callTool(client(reports), s.base, "", "whoami", nil); err != nil || r.status != http.StatusOK || r.data["subject"] != "mtls:reports" {
		t.Errorf("reports from 127.0.0.1: %+v %v", r, err)
	}
	// The refusal is in acme.com's trail (written within a second).
	deadline := time.Now().Add(5 * time.Second)
	for {
		audit := s.cli(t, "audit", "tail", "--tenant", "acme.com", "-n", "20", "--json")
		if strings.Contains(audit, `"decision":"DENIED"`) && strings.Contains(audit, `"subject":"mtls:billing"`) &&
			strings.Contains(audit, `"client_ip":"127.0.0.1"`) && strings.Contains(audit, "not allowed from this network") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no DENIED record for billing from 127.0.0.1:\n%s", audit)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A bad entry stops the start-up, named with the map's other problems.
	bad := filepath.Join(dir, "bad.yaml")
	certtest.WriteFile(t, bad, []byte(`
services:
  - {name: billing, uri: "spiffe://acme.com/billing", tenant: acme.com, role: developer, allowed_networks: [10.8.0.1/16]}
  - {name: reports, uri: "spiffe://acme.com/reports", tenant: acme.com, role: boss, allowed_networks: []}
`))
	code, _, stderr := gh(t, map[string]string{"GATEHOUSE_TLS_CERT": certFile, "GATEHOUSE_TLS_KEY": keyFile,
		"GATEHOUSE_CLIENT_CA": caFile, "GATEHOUSE_CLIENT_CERT_MAP": bad, "DATABASE_URL": "postgres://127.0.0.1:1/none"}, "serve")
	for _, want := range []string{`services.billing: allowed_networks: network 1 ("10.8.0.1/16"): has host bits set`, "services.reports: allowed_networks is empty", `role "boss"`} {
		if code == 0 || !strings.Contains(stderr, want) {
			t.Errorf("serve with a bad map: exit %d, stderr lacks %q:\n%s", code, want, stderr)
		}
	}
}
