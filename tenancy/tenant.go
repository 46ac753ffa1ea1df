package tenancy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/net/idna"
)

// Errors returned by tenancy and by [Store] implementations.
var (
	ErrTenantNotFound = errors.New("tenant not found")
	ErrSuspended      = errors.New("tenant suspended")
	ErrInvalidKey     = errors.New("invalid tenant key")
)

// Kind says whether a tenant is an organisation or one person.
type Kind string

// Tenant kinds.
const (
	Organization Kind = "organization"
	Personal     Kind = "personal"
)

// Status of a tenant.
type Status string

// Tenant statuses.
const (
	Active    Status = "active"
	Suspended Status = "suspended"
)

// Tenant is one organisation or person, with its private Postgres schema.
type Tenant struct {
	ID            string // uuid
	Key           string // "acme.com", "dev", "personal:github:5678"
	Kind          Kind
	Schema        string // opaque schema name, t_<hex>
	DBRole        string // opaque NOLOGIN role that can use only Schema; "" where roles cannot be created
	QueryRole     string // opaque role of query-tool sessions: SELECT on the workspace only; "" where none
	Status        Status
	SchemaVersion int
	CreatedAt     time.Time
	// RateLimit overrides the default tenant rate limit when set.
	RateLimit *Rate
}

// domainProfile maps a domain as a browser would look it up, and rejects
// empty labels, labels over 63 bytes and characters not allowed in host names.
var domainProfile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.VerifyDNSLength(true), idna.StrictDomainName(true))

// PersonalPrefix starts the key of every personal tenant; the rest is the
// principal's stable subject ("personal:google:1234").
const PersonalPrefix = "personal:"

// KindOf is the kind of the tenant a (normalised) key names.
func KindOf(key string) Kind {
	if strings.HasPrefix(key, PersonalPrefix) {
		return Personal
	}
	return Organization
}

// NormalizeKey returns the canonical form of a tenant key typed by an
// operator or derived from an email domain: a domain name is lower-cased and
// IDNA-normalised ("Bücher.example" → "xn--bcher-kva.example"); a single
// label such as "dev" is allowed; personal keys pass through when well formed.
func NormalizeKey(s string) (string, error) {
	s = strings.TrimSpace(s)
	if rest, ok := strings.CutPrefix(strings.ToLower(s), PersonalPrefix); ok {
		if rest == "" || len(s) > 200 || strings.ContainsFunc(rest, func(r rune) bool {
			return r <= ' ' || r > '~'
		}) {
			return "", fmt.Errorf("%w: %q", ErrInvalidKey, s)
		}
		return PersonalPrefix + rest, nil
	}
	key, err := domainProfile.ToASCII(strings.TrimSuffix(s, "."))
	if err != nil || key == "" || len(key) > 253 || strings.ContainsAny(key, ":/@ ") {
		return "", fmt.Errorf("%w: %q is not a domain name (such as acme.com) or a single name (such as dev)", ErrInvalidKey, s)
	}
	return key, nil
}
