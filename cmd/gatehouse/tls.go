package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/clientcert"
	"github.com/gatehouse-mcp/gatehouse/internal/reload"
	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// Self-hosted TLS. On Fly, Render and Railway the platform terminates TLS
// and Gatehouse serves plain HTTP behind it; elsewhere GATEHOUSE_TLS_CERT
// and GATEHOUSE_TLS_KEY serve TLS 1.3 directly, and GATEHOUSE_CLIENT_CA with
// GATEHOUSE_CLIENT_CERT_MAP admit services by client certificate (mutual
// TLS): the handshake verifies the chain, the map (identity/clientcert)
// says which service, tenant and role it is, and the request goes through
// the same pipeline as an API key's (tenant, role × scope, rate limits,
// audit).
//
// Every file is re-read when it changes, checked at most once a second: a
// renewed certificate is served from the next handshake, a new CA bundle
// verifies from the next handshake, a revocation in the map refuses the
// next request. A file that fails to parse is logged and the previous
// version stays in force.

// tlsReloadEvery is how often the files are looked at, at most.
const tlsReloadEvery = time.Second

// checkTLSConfig reports problems with the TLS settings and their files.
func checkTLSConfig(c *Config) []error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
	}
	switch {
	case (c.TLSCert == "") != (c.TLSKey == ""):
		bad("GATEHOUSE_TLS_CERT", "set both GATEHOUSE_TLS_CERT and GATEHOUSE_TLS_KEY, or neither")
	case c.TLSCert != "":
		if _, err := loadKeyPair(c.TLSCert, c.TLSKey); err != nil {
			bad("GATEHOUSE_TLS_CERT", "%v", err)
		}
	}
	if c.ClientCA != "" {
		if c.TLSCert == "" {
			bad("GATEHOUSE_CLIENT_CA", "client certificates need Gatehouse to serve TLS itself: set GATEHOUSE_TLS_CERT and GATEHOUSE_TLS_KEY")
		}
		if _, err := loadCAPool(c.ClientCA); err != nil {
			bad("GATEHOUSE_CLIENT_CA", "%v", err)
		}
	}
	switch {
	case c.ClientCA != "" && c.ClientCertMap == "":
		bad("GATEHOUSE_CLIENT_CERT_MAP", "GATEHOUSE_CLIENT_CA is set but no map says which service each certificate is (docs/deploy.md#mutual-tls-services-with-client-certificates)")
	case c.ClientCertMap != "" && c.ClientCA == "":
		bad("GATEHOUSE_CLIENT_CERT_MAP", "set GATEHOUSE_CLIENT_CA too: the CA whose certificates the map's services present")
	case c.ClientCertMap != "":
		if _, err := loadCertMap(c.ClientCertMap); err != nil {
			bad("GATEHOUSE_CLIENT_CERT_MAP", "%s:\n%s", c.ClientCertMap, indent(err))
		}
	}
	return errs
}

// serverTLS builds the TLS configuration and the client certificate map;
// both nil when Gatehouse serves plain HTTP.
func serverTLS(c *Config, log *slog.Logger) (*tls.Config, mcp.ClientCertMapper, error) {
	if c.TLSCert == "" {
		return nil, nil, nil
	}
	failed := func(what string) func(error) {
		return func(err error) {
			log.Error("reloading "+what+" failed; the previous version stays in force", "error", err)
		}
	}
	pair, err := reload.New([]string{c.TLSCert, c.TLSKey}, tlsReloadEvery, func() (*tls.Certificate, error) {
		kp, err := loadKeyPair(c.TLSCert, c.TLSKey)
		if err == nil {
			log.Info("TLS certificate loaded", "subject", kp.Leaf.Subject.String(), "dns_names", kp.Leaf.DNSNames,
				"not_after", kp.Leaf.NotAfter.UTC().Format(time.RFC3339))
			if time.Now().After(kp.Leaf.NotAfter) {
				log.Error("the TLS certificate has expired: clients will refuse it; renew it (it is reloaded without a restart)")
			}
		}
		return kp, err
	}, failed("the TLS certificate"))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: GATEHOUSE_TLS_CERT: %w", errConfig, err)
	}
	base := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return pair.Get(), nil },
	}
	if c.ClientCA == "" {
		return base, nil, nil
	}
	// Each version of the CA bundle gets its own configuration, made once
	// and handed to every handshake until the bundle changes.
	withCA, err := reload.New([]string{c.ClientCA}, tlsReloadEvery, func() (*tls.Config, error) {
		pool, err := loadCAPool(c.ClientCA)
		if err != nil {
			return nil, err
		}
		cfg := base.Clone()
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		cfg.ClientCAs = pool
		return cfg, nil
	}, failed("the client CA bundle"))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: GATEHOUSE_CLIENT_CA: %w", errConfig, err)
	}
	cm, err := reload.New([]string{c.ClientCertMap}, tlsReloadEvery, func() (*clientcert.Map, error) {
		m, err := loadCertMap(c.ClientCertMap)
		if err == nil {
			log.Info("client certificate map loaded", "file", c.ClientCertMap, "services", m.Len())
		}
		return m, err
	}, failed("the client certificate map"))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: GATEHOUSE_CLIENT_CERT_MAP: %s:\n%s", errConfig, c.ClientCertMap, indent(err))
	}
	cfg := withCA.Get().Clone()
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return withCA.Get(), nil }
	return cfg, certMap{cm}, nil
}

// certMap is the client certificate map as it is now.
type certMap struct {
	v *reload.Value[*clientcert.Map]
}

func (m certMap) Principal(chain []*x509.Certificate) (*identity.Principal, error) {
	return m.v.Get().Principal(chain)
}

func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &kp, nil // Go 1.23+ fills in kp.Leaf
}

func loadCAPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

func loadCertMap(file string) (*clientcert.Map, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return clientcert.Parse(f, clientcert.Rules{
		Roles:         []string{string(tenancy.Admin), string(tenancy.Developer), string(tenancy.Viewer)},
		TenantKey:     tenancy.NormalizeKey,
		DefaultScopes: func(role string) []string { return defaultScopes(tenancy.Role(role)) },
	})
}
