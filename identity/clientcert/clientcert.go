// Package clientcert decides which service a verified TLS client certificate
// stands for (mutual TLS).
//
// Trust and identity are split. The TLS layer verifies the chain against
// GATEHOUSE_CLIENT_CA — signature, validity period, the clientAuth key
// usage — so an expired certificate or one from another CA never reaches
// HTTP. This package maps a verified chain to a [identity.Principal] by a
// file of services:
//
//	services:
//	  - name: billing                       # the principal's subject is mtls:billing
//	    uri: spiffe://acme.com/billing      # a URI SAN of the certificate, exactly
//	    tenant: acme.com                    # the tenant's key
//	    role: developer                     # admin, developer or viewer
//	    scopes: [mcp:read, mcp:write]       # default: all the role can use
//	    allowed_networks: [10.0.0.0/8]      # where it may call from (CIDRs or addresses; default: anywhere)
//	  - name: reports
//	    subject: CN=reports,O=Acme Corp     # the subject DN (RFC 2253, as openssl -nameopt RFC2253 prints it)
//	    tenant: acme.com
//	    role: viewer
//	revoked:                                # refused although they verify
//	  - sha256:9f86d081884c7d65…            # a certificate's SHA-256 fingerprint (colons allowed)
//	  - serial:4a:3b:…                      # or its serial number, in hex
//
// A service with allowed_networks may be used only from those source
// networks (identity.ParseNetworks: IPv4 or IPv6 CIDRs, bare addresses,
// at most 64); the HTTP layer refuses a call from elsewhere with 403, as
// for an API key with allowed networks.
//
// A certificate maps to one service or is refused: matched by none, by two,
// or revoked (itself or any certificate of its chain, so an intermediate
// CA can be revoked too). The principal's tenant is named by key (and
// created on first use, as `gatehouse apikey create --tenant` does: the map
// is the operator's word); its role is the service's, like an API key's.
//
// The map is plain data with no I/O; the server re-reads the file when it
// changes (package reload), so a revocation takes effect without a restart.
package clientcert

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// Provider is the Provider of the principals this package makes.
const Provider = "mtls"

// Service is one entry of the map.
type Service struct {
	Name    string   `yaml:"name"`
	URI     string   `yaml:"uri"`
	Subject string   `yaml:"subject"`
	Tenant  string   `yaml:"tenant"`
	Role    string   `yaml:"role"`
	Scopes  []string `yaml:"scopes"`
	// AllowedNetworks restrict where the service may call from: a YAML
	// list, or one string of networks separated by commas.
	AllowedNetworks NetworkList `yaml:"allowed_networks"`

	networks identity.Networks
}

// NetworkList is allowed_networks as written: a list of strings, or one
// string of comma-separated entries (10.0.0.0/8, 192.0.2.7).
type NetworkList []string

// UnmarshalYAML implements yaml.Unmarshaler.
func (l *NetworkList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		*l = NetworkList{}
		for _, e := range strings.Split(n.Value, ",") {
			*l = append(*l, strings.TrimSpace(e))
		}
		return nil
	}
	var list []string
	if err := n.Decode(&list); err != nil {
		return err
	}
	*l = list
	return nil
}

// Map maps verified certificate chains to services.
type Map struct {
	byURI       map[string]*Service
	bySubject   map[string]*Service
	fingerprint map[[sha256.Size]byte]bool
	serial      []*big.Int
}

type file struct {
	Services []Service `yaml:"services"`
	Revoked  []string  `yaml:"revoked"`
}

// Rules are what Parse cannot know by itself: tenancy's words.
type Rules struct {
	Roles         []string                     // valid role names
	TenantKey     func(string) (string, error) // normalises a tenant key or says why it is not one
	DefaultScopes func(role string) []string   // scopes of a service that lists none
}

// Parse reads a map, reporting every problem it finds.
func Parse(r io.Reader, rules Rules) (*Map, error) {
	var f file
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	m := &Map{byURI: map[string]*Service{}, bySubject: map[string]*Service{}, fingerprint: map[[sha256.Size]byte]bool{}}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	names := map[string]bool{}
	for i := range f.Services {
		s := &f.Services[i]
		at := fmt.Sprintf("services[%d]", i)
		if s.Name != "" {
			at = "services." + s.Name
		}
		switch {
		case s.Name == "":
			bad("%s: name is missing", at)
		case names[s.Name]:
			bad("%s: a second service has this name", at)
		}
		names[s.Name] = true
		switch {
		case (s.URI == "") == (s.Subject == ""):
			bad("%s: give exactly one of uri and subject", at)
		case s.URI != "":
			if m.byURI[s.URI] != nil {
				bad("%s: uri %s is already %s's", at, s.URI, m.byURI[s.URI].Name)
			}
			m.byURI[s.URI] = s
		default:
			dn := canonicalDN(s.Subject)
			if m.bySubject[dn] != nil {
				bad("%s: subject %s is already %s's", at, s.Subject, m.bySubject[dn].Name)
			}
			m.bySubject[dn] = s
		}
		if s.Tenant == "" {
			bad("%s: tenant is missing (the key of the tenant the service acts in, such as acme.com)", at)
		} else if key, err := rules.TenantKey(s.Tenant); err != nil {
			bad("%s: tenant: %v", at, err)
		} else {
			s.Tenant = key
		}
		if !slices.Contains(rules.Roles, s.Role) {
			bad("%s: role %q is not one of %s", at, s.Role, strings.Join(rules.Roles, ", "))
		}
		for _, sc := range s.Scopes {
			if !slices.Contains(identity.AllScopes, sc) {
				bad("%s: scope %q is not one of %s", at, sc, strings.Join(identity.AllScopes, ", "))
			}
		}
		if len(s.Scopes) == 0 {
			s.Scopes = rules.DefaultScopes(s.Role)
		}
		if s.AllowedNetworks != nil && len(s.AllowedNetworks) == 0 {
			// allowed_networks: [] reads as a restriction left empty by
			// mistake; leave the key out for a service usable from anywhere.
			bad("%s: allowed_networks is empty; list the networks the service calls from, or leave allowed_networks out", at)
		} else if ns, err := identity.ParseNetworks(s.AllowedNetworks); err != nil {
			bad("%s: allowed_networks: %s", at, strings.ReplaceAll(err.Error(), "\n", "; "))
		} else {
			s.networks = ns
		}
	}
	for i, r := range f.Revoked {
		kind, value, _ := strings.Cut(r, ":")
		digits := strings.NewReplacer(":", "", " ", "").Replace(value)
		if kind == "serial" && len(digits)%2 == 1 {
			// A serial is a number: tools that print it without leading
			// zeros (Go's %x, some CA consoles) give odd-length hex.
			digits = "0" + digits
		}
		b, err := hex.DecodeString(digits)
		switch {
		case err != nil || len(b) == 0:
			bad("revoked[%d]: %q: want sha256:<hex fingerprint> or serial:<hex serial>", i, r)
		case kind == "sha256" && len(b) == sha256.Size:
			m.fingerprint[[sha256.Size]byte(b)] = true
		case kind == "serial":
			m.serial = append(m.serial, new(big.Int).SetBytes(b))
		default:
			bad("revoked[%d]: %q: want sha256:<64 hex digits> or serial:<hex serial>", i, r)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

// Len is the number of services.
func (m *Map) Len() int { return len(m.byURI) + len(m.bySubject) }

// Principal returns the service a verified chain (leaf first) stands for.
// The chain must come from a TLS handshake that verified it.
func (m *Map) Principal(chain []*x509.Certificate) (*identity.Principal, error) {
	if len(chain) == 0 {
		return nil, identity.Invalid("no verified client certificate")
	}
	leaf := chain[0]
	for _, c := range chain {
		if m.revoked(c) {
			if c == leaf {
				return nil, identity.Invalid("client certificate %s (serial %s) is revoked", leaf.Subject, serial(leaf))
			}
			return nil, identity.Invalid("client certificate %s was issued by %s, which is revoked", leaf.Subject, c.Subject)
		}
	}
	var candidates []*Service
	for _, u := range leaf.URIs {
		candidates = append(candidates, m.byURI[u.String()])
	}
	candidates = append(candidates, m.bySubject[canonicalDN(leaf.Subject.String())])
	var found *Service
	for _, s := range candidates {
		switch {
		case s == nil || s == found:
		case found != nil:
			return nil, identity.Invalid("client certificate %s matches both %s and %s; give each service its own certificate", leaf.Subject, found.Name, s.Name)
		default:
			found = s
		}
	}
	if found == nil {
		return nil, identity.Invalid("client certificate %s is not mapped to a service on this server", leaf.Subject)
	}
	return &identity.Principal{
		Provider:  Provider,
		Subject:   Provider + ":" + found.Name,
		Name:      found.Name,
		Scopes:    found.Scopes,
		Expiry:    leaf.NotAfter,
		TenantKey: found.Tenant,
		Role:      found.Role,
		// Checked by the HTTP layer against the caller's address.
		AllowedNetworks: found.networks,
		Claims: map[string]any{
			"certificate_serial": serial(leaf),
			"certificate_expiry": leaf.NotAfter.UTC().Format(time.RFC3339),
		},
	}, nil
}

func (m *Map) revoked(c *x509.Certificate) bool {
	if m.fingerprint[sha256.Sum256(c.Raw)] {
		return true
	}
	for _, s := range m.serial {
		if s.Cmp(c.SerialNumber) == 0 {
			return true
		}
	}
	return false
}

// Fingerprint is a certificate's SHA-256 fingerprint as a revoked entry
// names it.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func serial(c *x509.Certificate) string {
	var b bytes.Buffer
	for i, x := range c.SerialNumber.Bytes() {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02x", x)
	}
	return b.String()
}

// canonicalDN compares distinguished names without regard to the spaces
// people put after commas or the case of attribute names (cn= and CN=).
func canonicalDN(dn string) string {
	var parts []string
	start := 0
	for i := 0; i <= len(dn); i++ {
		switch {
		case i < len(dn) && dn[i] == '\\':
			i++ // an escaped character, perhaps a comma inside a value
		case i == len(dn) || dn[i] == ',':
			k, v, _ := strings.Cut(strings.TrimSpace(dn[start:i]), "=")
			parts = append(parts, strings.ToUpper(strings.TrimSpace(k))+"="+strings.TrimSpace(v))
			start = i + 1
		}
	}
	return strings.Join(parts, ",")
}
