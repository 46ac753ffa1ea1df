package tenancy_test

import (
	"errors"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

func TestNormalizeKey(t *testing.T) {
	for in, want := range map[string]string{
		"acme.com":              "acme.com",
		"ACME.com.":             "acme.com",
		" dev ":                 "dev",
		"Bücher.example":        "xn--bcher-kva.example",
		"personal:google:1234":  "personal:google:1234",
		"PERSONAL:github:5678":  "personal:github:5678",
		"sub.domain.acme.co.uk": "sub.domain.acme.co.uk",
	} {
		got, err := tenancy.NormalizeKey(in)
		if err != nil || got != want {
			t.Errorf("NormalizeKey(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "a b.com", "alice@acme.com", "http://acme.com", "personal:", "personal:a b", "acme..com", "-acme.com"} {
		if got, err := tenancy.NormalizeKey(in); !errors.Is(err, tenancy.ErrInvalidKey) {
			t.Errorf("NormalizeKey(%q) = %q, %v; want ErrInvalidKey", in, got, err)
		}
	}
}

func TestRoles(t *testing.T) {
	tests := []struct {
		have, min tenancy.Role
		want      bool
	}{
		{tenancy.Admin, tenancy.Viewer, true},
		{tenancy.Admin, tenancy.Admin, true},
		{tenancy.Developer, tenancy.Admin, false},
		{tenancy.Developer, tenancy.Developer, true},
		{tenancy.Viewer, tenancy.Developer, false},
		{tenancy.Role("root"), tenancy.Viewer, false},
		{tenancy.Role(""), tenancy.Viewer, false},
	}
	for _, tt := range tests {
		if got := tt.have.Allows(tt.min); got != tt.want {
			t.Errorf("%q.Allows(%q) = %v, want %v", tt.have, tt.min, got, tt.want)
		}
	}
	if _, err := tenancy.ParseRole("owner"); err == nil {
		t.Error("ParseRole(owner) succeeded")
	}
	if r := tenancy.Admin.Lesser(tenancy.Viewer); r != tenancy.Viewer {
		t.Errorf("Lesser = %q", r)
	}
}
