package tenancy_test

import (
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

func TestPlace(t *testing.T) {
	pol := tenancy.DefaultPolicy()
	pol.Aliases = map[string]string{"acme.io": "acme.com"}
	type p = identity.Principal
	hd := func(d string) map[string]any { return map[string]any{"hd": d} }
	tests := []struct {
		name string
		p    p
		key  string
	}{
		{"verified corporate email", p{Provider: "github", Subject: "github:1", Email: "alice@acme.com", EmailVerified: true}, "acme.com"},
		{"case and trailing dot", p{Provider: "oidc", Subject: "corp:1", Email: "Bob@ACME.com.", EmailVerified: true}, "acme.com"},
		{"IDNA domain", p{Provider: "auth0", Subject: "auth0:1", Email: "x@Bücher.example", EmailVerified: true}, "xn--bcher-kva.example"},
		{"unverified email never decides", p{Provider: "auth0", Subject: "auth0:evil", Email: "mallory@acme.com"}, "personal:auth0:evil"},
		{"no email", p{Provider: "github", Subject: "github:2"}, "personal:github:2"},
		{"gmail user", p{Provider: "google", Subject: "google:3", Email: "carol@gmail.com", EmailVerified: true}, "personal:google:3"},
		{"second gmail user", p{Provider: "google", Subject: "google:4", Email: "dave@gmail.com", EmailVerified: true}, "personal:google:4"},
		{"gmx wildcard", p{Provider: "oidc", Subject: "corp:5", Email: "e@gmx.de", EmailVerified: true}, "personal:corp:5"},
		{"github noreply", p{Provider: "github", Subject: "github:6", Email: "6+frank@users.noreply.github.com", EmailVerified: true}, "personal:github:6"},
		{"google workspace vouches", p{Provider: "google", Subject: "google:7", Email: "gina@acme.com", EmailVerified: true, Claims: hd("acme.com")}, "acme.com"},
		{"google without hd: personal", p{Provider: "google", Subject: "google:8", Email: "hank@acme.com", EmailVerified: true}, "personal:google:8"},
		{"google hd of another domain", p{Provider: "google", Subject: "google:9", Email: "ivan@acme.com", EmailVerified: true, Claims: hd("evil.com")}, "personal:google:9"},
		{"alias", p{Provider: "github", Subject: "github:10", Email: "jo@acme.io", EmailVerified: true}, "acme.com"},
		{"not an address", p{Provider: "oidc", Subject: "corp:11", Email: "acme.com", EmailVerified: true}, "personal:corp:11"},
		{"single-label domain", p{Provider: "oidc", Subject: "corp:12", Email: "root@localhost", EmailVerified: true}, "personal:corp:12"},
		{"two at signs", p{Provider: "oidc", Subject: "corp:13", Email: "a@evil.com@acme.com", EmailVerified: true}, "acme.com"},
	}
	for _, tt := range tests {
		key, kind := pol.Place(&tt.p)
		if key != tt.key {
			t.Errorf("%s: placed in %q, want %q", tt.name, key, tt.key)
		}
		if want := strings.HasPrefix(tt.key, tenancy.PersonalPrefix); (kind == tenancy.Personal) != want {
			t.Errorf("%s: kind %s", tt.name, kind)
		}
	}
}

func TestSignupPolicy(t *testing.T) {
	tests := []struct {
		signup    tenancy.Signup
		allow     []string
		key       string
		kind      tenancy.Kind
		maySignUp bool
	}{
		{tenancy.SignupOpen, nil, "acme.com", tenancy.Organization, true},
		{tenancy.SignupOpen, nil, "personal:google:1", tenancy.Personal, true},
		{tenancy.SignupAllowlist, []string{"acme.com"}, "acme.com", tenancy.Organization, true},
		{tenancy.SignupAllowlist, []string{"acme.com"}, "evil.com", tenancy.Organization, false},
		{tenancy.SignupAllowlist, []string{"acme.com"}, "personal:google:1", tenancy.Personal, false},
		{tenancy.SignupAllowlist, []string{"personal"}, "personal:google:1", tenancy.Personal, true},
		{tenancy.SignupClosed, nil, "acme.com", tenancy.Organization, false},
	}
	for _, tt := range tests {
		pol := &tenancy.Policy{Signup: tt.signup, Allowlist: tt.allow, DefaultRole: tenancy.Developer}
		if got := pol.MaySignUp(tt.key, tt.kind); got != tt.maySignUp {
			t.Errorf("%s %v: MaySignUp(%s) = %v", tt.signup, tt.allow, tt.key, got)
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	pol := &tenancy.Policy{Signup: "sometimes", DefaultRole: "owner", Aliases: map[string]string{"a b": "acme.com"}}
	err := pol.Validate()
	for _, want := range []string{"sometimes", "owner", "a b"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
	if err := (&tenancy.Policy{Signup: tenancy.SignupAllowlist, DefaultRole: tenancy.Viewer}).Validate(); err == nil {
		t.Error("allowlist sign-up without an allow-list accepted")
	}
	if err := tenancy.DefaultPolicy().Validate(); err != nil {
		t.Errorf("default policy: %v", err)
	}
}
