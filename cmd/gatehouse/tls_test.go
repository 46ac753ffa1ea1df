package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/identity/clientcert"
	"github.com/gatehouse-mcp/gatehouse/internal/certtest"
)

// TestMutualTLS runs the binary serving TLS itself with client
// certificates, all made at test time: a valid certificate is a service
// principal through the same pipeline as an API key (tenant, role, audit);
// an expired one, one from another CA, one the map does not name and one
// revoked by editing the map are refused; TLS 1.2 is refused; a renewed
// server certificate is served without a restart.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	serverCA := certtest.NewCA(t, "Gatehouse test server CA")
	server := serverCA.Issue(t, certtest.Options{CommonName: "localhost", DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	certFile, keyFile := server.Write(t, dir, "server")

	servicesCA := certtest.NewCA(t, "Acme services CA")
	otherCA := certtest.NewCA(t, "Some other CA")
	billingURI := "spiffe://acme.com/billing"
	client := func(o certtest.Options, ca *certtest.CA) *certtest.Cert {
		o.Client = true
		return ca.Issue(t, o)
	}
	billing := client(certtest.Options{CommonName: "billing", URIs: []string{billingURI}}, servicesCA)
	billingRenewed := client(certtest.Options{CommonName: "billing", URIs: []string{billingURI}}, servicesCA)
	reports := client(certtest.Options{CommonName: "reports", Organization: "Acme"}, servicesCA)
	expired := client(certtest.Options{CommonName: "billing", URIs: []string{billingURI},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}, servicesCA)
	foreign := client(certtest.Options{CommonName: "billing", URIs: []string{billingURI}}, otherCA)
	stranger := client(certtest.Options{CommonName: "stranger", URIs: []string{"spiffe://acme.com/stranger"}}, servicesCA)

	caFile := filepath.Join(dir, "clients-ca.pem")
	certtest.WriteFile(t, caFile, servicesCA.PEM)
	mapFile := filepath.Join(dir, "client-certs.yaml")
	services := `
services:
  - name: billing
    uri: ` + billingURI + `
    tenant: acme.com
    role: developer
  - name: reports
    subject: CN=reports, O=Acme
    tenant: acme.com
    role: viewer
`
	certtest.WriteFile(t, mapFile, []byte(services))

	s := runBinary(t, "GATEHOUSE_TLS_CERT="+certFile, "GATEHOUSE_TLS_KEY="+keyFile,
		"GATEHOUSE_CLIENT_CA="+caFile, "GATEHOUSE_CLIENT_CERT_MAP="+mapFile)
	if !strings.HasPrefix(s.base, "https://") {
		t.Fatalf("base %s", s.base)
	}
	roots := x509.NewCertPool()
	roots.AddCert(serverCA.Cert)
	httpsClient := func(c *certtest.Cert, tweak ...func(*tls.Config)) *http.Client {
		cfg := &tls.Config{RootCAs: roots}
		if c != nil {
			// Present it whatever CAs the server asks for (Go's client would
			// otherwise keep another CA's certificate to itself).
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c.TLS, nil }
		}
		for _, f := range tweak {
			f(cfg)
		}
		// One connection per request: each request is a new handshake.
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	}

	// A real MCP client presenting billing's certificate, and no token.
	mc := sdk.NewClient(&sdk.Implementation{Name: "mtls-test", Version: "1"}, nil)
	cs, err := mc.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: s.base + "/mcp", HTTPClient: httpsClient(billing)}, nil)
	if err != nil {
		t.Fatalf("connect with billing's certificate: %v", err)
	}
	defer cs.Close()
	res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "whoami"})
	if err != nil || res.IsError {
		t.Fatalf("whoami: %v %v", err, res)
	}
	var me struct {
		Subject, Provider, Tenant, Role string
		Scopes                          []string
	}
	b, _ := json.Marshal(res.StructuredContent)
	_ = json.Unmarshal(b, &me)
	if me.Subject != "mtls:billing" || me.Provider != "mtls" || me.Tenant != "acme.com" || me.Role != "developer" ||
		strings.Join(me.Scopes, " ") != "mcp:read mcp:write" {
		t.Errorf("billing is %+v", me)
	}
	if res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "add_todo", Arguments: map[string]any{"title": "pay the invoices"}}); err != nil || res.IsError {
		t.Fatalf("add_todo as billing: %v %v", err, res)
	}

	// The map's role applies: reports (subject match) is a viewer.
	r, err := callTool(httpsClient(reports), s.base, "", "list_todos", nil)
	if err != nil || r.status != 200 || r.isError || !strings.Contains(fmt.Sprint(r.data), "pay the invoices") {
		t.Errorf("list_todos as reports: %+v %v", r, err)
	}
	r, err = callTool(httpsClient(reports), s.base, "", "add_todo", map[string]any{"title": "x"})
	if err != nil || !r.isError || !strings.Contains(r.text, "developer") {
		t.Errorf("add_todo as a viewer: %+v %v", r, err)
	}

	// Refused at the handshake: expired, issued by another CA.
	for name, c := range map[string]*certtest.Cert{"expired": expired, "another CA's": foreign} {
		if r, err := callTool(httpsClient(c), s.base, "", "whoami", nil); err == nil {
			t.Errorf("%s certificate: %+v, want the handshake refused", name, r)
		}
	}
	// (The server logs after the client has seen the alert.)
	for _, want := range []string{"x509: certificate has expired", "certificate signed by unknown authority"} {
		for deadline := time.Now().Add(5 * time.Second); !strings.Contains(s.logs.String(), want); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("the log does not say %q", want)
				break
			}
		}
	}
	// Verified but nobody's, or nothing at all: 401 with a challenge.
	r, _ = callTool(httpsClient(stranger), s.base, "", "whoami", nil)
	if r.status != 401 || !strings.Contains(r.challenge, `error="invalid_token"`) || !strings.Contains(r.text, "not mapped to a service") {
		t.Errorf("unmapped certificate: %+v", r)
	}
	r, _ = callTool(httpsClient(nil), s.base, "", "whoami", nil)
	if r.status != 401 || !strings.Contains(r.challenge, "resource_metadata=") {
		t.Errorf("no certificate, no token: %+v", r)
	}
	// Bearer credentials still work over TLS, and take precedence over a
	// certificate.
	key := strings.TrimSpace(s.cli(t, "apikey", "create", "--tenant", "other.com", "--role", "viewer"))
	r, _ = callTool(httpsClient(billing), s.base, key, "whoami", nil)
	if r.status != 200 || r.data["tenant"] != "other.com" {
		t.Errorf("API key with billing's certificate: %+v", r)
	}
	// TLS 1.3 only.
	if _, err := callTool(httpsClient(billing, func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }), s.base, "", "whoami", nil); err == nil {
		t.Error("a TLS 1.2 client was served")
	}
	// The health probe of the container image speaks TLS too.
	s.cli(t, "healthcheck")

	// Revoked by editing the map: refused from the next request, without a
	// restart; billing's renewed certificate keeps working.
	edited := time.Now()
	certtest.WriteFile(t, mapFile, []byte(services+"revoked:\n  - "+clientcert.Fingerprint(billing.Cert)+"\n"))
	for {
		r, _ = callTool(httpsClient(billing), s.base, "", "whoami", nil)
		if r.status == 401 {
			break
		}
		if time.Since(edited) > 10*time.Second {
			t.Fatalf("the revoked certificate still works 10s after the map changed: %+v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("revocation by the map took effect after %s", time.Since(edited).Round(time.Millisecond))
	if !strings.Contains(r.text, "is revoked") {
		t.Errorf("revoked certificate: %+v", r)
	}
	if r, _ := callTool(httpsClient(billingRenewed), s.base, "", "whoami", nil); r.status != 200 || r.data["subject"] != "mtls:billing" {
		t.Errorf("billing's renewed certificate: %+v", r)
	}
	// A broken edit is reported and changes nothing.
	certtest.WriteFile(t, mapFile, []byte("services: [oops"))
	time.Sleep(1100 * time.Millisecond)
	if r, _ := callTool(httpsClient(billing), s.base, "", "whoami", nil); r.status != 401 {
		t.Errorf("after a broken map, the revoked certificate: %+v", r)
	}
	if r, _ := callTool(httpsClient(billingRenewed), s.base, "", "whoami", nil); r.status != 200 {
		t.Errorf("after a broken map, billing's renewed certificate: %+v", r)
	}
	if !strings.Contains(s.logs.String(), "reloading the client certificate map failed") {
		t.Error("the broken map was not logged")
	}
	certtest.WriteFile(t, mapFile, []byte(services+"revoked:\n  - "+clientcert.Fingerprint(billing.Cert)+"\n"))

	// Every decision about the services is in acme.com's audit trail.
	audit := s.cli(t, "audit", "tail", "--tenant", "acme.com", "-n", "50")
	for _, want := range []string{"mtls:billing", "mtls:reports"} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit trail lacks %s:\n%s", want, audit)
		}
	}

	// A renewed server certificate is served from the next handshake.
	renewed := serverCA.Issue(t, certtest.Options{CommonName: "localhost", DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	renewed.Write(t, dir, "server")
	deadline := time.Now().Add(10 * time.Second)
	for {
		h2 := httpsClient(nil)
		h2.Transport.(*http.Transport).ForceAttemptHTTP2 = true
		res, err := h2.Get(s.base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.ProtoMajor != 2 {
			t.Errorf("served %s, want HTTP/2 over TLS", res.Proto)
		}
		if res.Header.Get("Strict-Transport-Security") == "" {
			t.Error("no HSTS header over TLS")
		}
		if res.TLS.PeerCertificates[0].SerialNumber.Cmp(renewed.Cert.SerialNumber) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the renewed server certificate was not served within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if logs := s.logs.String(); strings.Contains(logs, string(billing.KeyPEM)) || strings.Contains(logs, string(server.KeyPEM)) {
		t.Error("a private key reached the log")
	}
}
