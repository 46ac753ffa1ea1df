package tenancy

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// ErrSignupRefused means the principal's tenant does not exist and the
// sign-up policy does not allow creating it.
var ErrSignupRefused = errors.New("sign-up refused")

// Signup says which new tenants may be created on first use.
type Signup string

// Sign-up policies.
const (
	SignupOpen      Signup = "open"      // any tenant
	SignupAllowlist Signup = "allowlist" // tenants listed in Policy.Allowlist
	SignupClosed    Signup = "closed"    // none: only existing tenants
)

// AllowPersonal, in an allow-list, admits personal tenants.
const AllowPersonal = "personal"

// githubNoreply hides a GitHub user's address; it never names an organisation.
const githubNoreply = "users.noreply.github.com"

// DefaultConsumerDomains are mail providers whose users share nothing but
// the provider: each user gets a personal tenant. "gmx.*" matches any
// top-level domain.
var DefaultConsumerDomains = []string{
	"gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "hotmail.co.uk", "live.com", "msn.com",
	"yahoo.com", "yahoo.co.uk", "yahoo.fr", "ymail.com", "icloud.com", "me.com", "mac.com",
	"proton.me", "protonmail.com", "pm.me", "aol.com", "gmx.*", "web.de", "mail.com", "zoho.com",
	"yandex.ru", "yandex.com", "mail.ru", "qq.com", "163.com", "fastmail.com", "hey.com",
	"tutanota.com", "tuta.io", githubNoreply,
}

// Policy decides which tenant a principal belongs to and whether a new
// tenant may be created. The zero value is not useful; see [DefaultPolicy].
type Policy struct {
	ConsumerDomains []string          // see DefaultConsumerDomains
	Aliases         map[string]string // normalised domain → tenant key ("acme.io" → "acme.com")
	Signup          Signup
	Allowlist       []string // tenant keys, and AllowPersonal
	DefaultRole     Role     // role of members after an organisation's first (an admin)
}

// DefaultPolicy: open sign-up, the default consumer domains, developers.
func DefaultPolicy() *Policy {
	return &Policy{ConsumerDomains: DefaultConsumerDomains, Signup: SignupOpen, DefaultRole: Developer}
}

// Validate reports every problem with the policy.
func (p *Policy) Validate() error {
	var errs []error
	switch p.Signup {
	case SignupOpen, SignupClosed:
	case SignupAllowlist:
		if len(p.Allowlist) == 0 {
			errs = append(errs, errors.New("sign-up policy allowlist needs an allow-list"))
		}
	default:
		errs = append(errs, fmt.Errorf("sign-up policy %q: want open, allowlist or closed", p.Signup))
	}
	if p.DefaultRole.rank() == 0 {
		errs = append(errs, fmt.Errorf("default role %q: want admin, developer or viewer", p.DefaultRole))
	}
	for from, to := range p.Aliases {
		if _, err := NormalizeKey(from); err != nil {
			errs = append(errs, fmt.Errorf("alias %q: %w", from, err))
		}
		if _, err := NormalizeKey(to); err != nil {
			errs = append(errs, fmt.Errorf("alias target %q: %w", to, err))
		}
	}
	return errors.Join(errs...)
}

// Place returns the tenant a principal belongs in. Only a verified email
// decides an organisation tenant; consumer domains, GitHub's noreply
// domain, unverified or missing emails, and Google accounts whose domain
// Google Workspace does not vouch for (the hd claim) place the principal in
// its own personal tenant, keyed by its stable subject.
func (p *Policy) Place(pr *identity.Principal) (key string, kind Kind) {
	personal := PersonalPrefix + pr.Subject
	domain, ok := p.verifiedDomain(pr)
	if !ok {
		return personal, Personal
	}
	if pr.Provider == "google" {
		hd, _ := pr.Claims["hd"].(string)
		if hd, err := NormalizeKey(hd); err != nil || hd != domain {
			return personal, Personal
		}
	}
	if to, ok := p.Aliases[domain]; ok {
		domain = to
	}
	if p.consumer(domain) {
		return personal, Personal
	}
	return domain, Organization
}

func (p *Policy) verifiedDomain(pr *identity.Principal) (string, bool) {
	if !pr.EmailVerified {
		return "", false
	}
	at := strings.LastIndexByte(pr.Email, '@')
	if at <= 0 || at == len(pr.Email)-1 {
		return "", false
	}
	domain, err := NormalizeKey(pr.Email[at+1:])
	if err != nil || !strings.Contains(domain, ".") {
		return "", false
	}
	return domain, true
}

func (p *Policy) consumer(domain string) bool {
	if domain == githubNoreply || strings.HasSuffix(domain, "."+githubNoreply) {
		return true
	}
	for _, d := range p.ConsumerDomains {
		if prefix, ok := strings.CutSuffix(d, ".*"); ok {
			if rest, ok := strings.CutPrefix(domain, prefix+"."); ok && !strings.Contains(rest, ".") {
				return true
			}
		} else if domain == d {
			return true
		}
	}
	return false
}

// MaySignUp reports whether a tenant that does not exist yet may be created.
func (p *Policy) MaySignUp(key string, kind Kind) bool {
	switch p.Signup {
	case SignupOpen:
		return true
	case SignupAllowlist:
		if kind == Personal {
			return slices.Contains(p.Allowlist, AllowPersonal)
		}
		return slices.Contains(p.Allowlist, key)
	}
	return false
}
