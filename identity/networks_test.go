package identity_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

func TestParseNetworksCanonical(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{nil, []string{}},
		{[]string{"203.0.113.7"}, []string{"203.0.113.7/32"}},
		{[]string{" 10.0.0.0/8 "}, []string{"10.0.0.0/8"}},
		{[]string{"2001:db8::1"}, []string{"2001:db8::1/128"}},
		{[]string{"2001:DB8::/32"}, []string{"2001:db8::/32"}},
		// IPv4-mapped IPv6 entries are the IPv4 networks they stand for.
		{[]string{"::ffff:10.0.0.1"}, []string{"10.0.0.1/32"}},
		{[]string{"::ffff:10.0.0.0/104"}, []string{"10.0.0.0/8"}},
		{[]string{"::ffff:0:0/96"}, []string{"0.0.0.0/0"}},
		// Sorted, duplicates (in any spelling) dropped.
		{[]string{"192.0.2.0/24", "10.0.0.0/8", "::ffff:10.0.0.0/104", "10.0.0.0/8"}, []string{"10.0.0.0/8", "192.0.2.0/24"}},
		{[]string{"0.0.0.0/0", "::/0"}, []string{"0.0.0.0/0", "::/0"}},
	} {
		ns, err := identity.ParseNetworks(tc.in)
		if err != nil {
			t.Errorf("ParseNetworks(%q): %v", tc.in, err)
			continue
		}
		if got := ns.Strings(); !slices.Equal(got, tc.want) {
			t.Errorf("ParseNetworks(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestParseNetworksRefuses: every bad entry is named, by position and
// text, with what to write instead; good entries around it do not hide it.
func TestParseNetworksRefuses(t *testing.T) {
	for _, tc := range []struct {
		entry string
		want  string
	}{
		{"", "empty"},
		{"   ", "empty"},
		{"10.0.0.0/33", "not a network"},
		{"10.0.0/8", "not a network"},
		{"10.0.0.256", "not an IP address"},
		{"example.com", "not an IP address"},
		{"10.0.0.1/8", "host bits set: write the network 10.0.0.0/8, or the single address 10.0.0.1"},
		{"2001:db8::1/32", "host bits set: write the network 2001:db8::/32"},
		{"fe80::1%eth0", "zone"},
		{"fe80::/10%eth0", "zone"},
		{"::ffff:0:0/80", "IPv4-mapped"},
		{"10.0.0.0/-1", "not a network"},
		{"10.0.0.0/8/8", "not a network"},
	} {
		_, err := identity.ParseNetworks([]string{"192.0.2.0/24", tc.entry, "2001:db8::/32"})
		if err == nil {
			t.Errorf("ParseNetworks accepted %q", tc.entry)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, fmt.Sprintf("network 2 (%q)", tc.entry)) || !strings.Contains(msg, tc.want) {
			t.Errorf("ParseNetworks(%q): %q, want it to name entry 2 and say %q", tc.entry, msg, tc.want)
		}
	}
	// Every problem at once.
	_, err := identity.ParseNetworks([]string{"bad", "10.0.0.0/8", "10.0.0.1/8"})
	if err == nil || !strings.Contains(err.Error(), "network 1") || !strings.Contains(err.Error(), "network 3") {
		t.Errorf("two bad entries: %v, want both named", err)
	}
	// The cap.
	many := make([]string, identity.MaxNetworks+1)
	for i := range many {
		many[i] = fmt.Sprintf("10.0.%d.0/24", i)
	}
	if _, err := identity.ParseNetworks(many[:identity.MaxNetworks]); err != nil {
		t.Errorf("%d networks: %v", identity.MaxNetworks, err)
	}
	if _, err := identity.ParseNetworks(many); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("at most %d", identity.MaxNetworks)) {
		t.Errorf("%d networks: %v, want the cap named", len(many), err)
	}
	// A long bad entry is cut in the message.
	if _, err := identity.ParseNetworks([]string{strings.Repeat("x", 5000)}); err == nil || len(err.Error()) > 400 {
		t.Errorf("long entry: %d bytes of error", len(err.Error()))
	}
}

// TestNetworksAllows tries to get a call through a restricted list: other
// networks, neighbours of the edges, the same address written as
// IPv4-mapped IPv6 (allowed: it is the same host), IPv6 addresses that
// merely contain the IPv4 bytes (refused), zones, garbage.
func TestNetworksAllows(t *testing.T) {
	ns, err := identity.ParseNetworks([]string{"10.0.0.0/8", "203.0.113.7", "2001:db8:1::/48"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ip   string
		want bool
	}{
		{"10.0.0.1", true},
		{"10.255.255.255", true},
		{"11.0.0.0", false},
		{"9.255.255.255", false},
		{"203.0.113.7", true},
		{"203.0.113.8", false},
		{"203.0.113.6", false},
		{"::ffff:10.0.0.1", true},
		{"::ffff:203.0.113.7", true},
		{"::ffff:11.0.0.1", false},
		{"[::ffff:10.0.0.1]", true},
		{"::10.0.0.1", false}, // IPv4-compatible (deprecated), not mapped: another address
		{"64:ff9b::a00:1", false},
		{"2002:a00:1::", false}, // 6to4 of 10.0.0.1: not the same host to us
		{"2001:db8:1::1", true},
		{"2001:db8:1:ffff:ffff:ffff:ffff:ffff", true},
		{"2001:db8:2::1", false},
		{"2001:db8:1::1%eth0", true},
		{"::1", false},
		{"127.0.0.1", false},
		{"", false},
		{"unknown", false},
		{"10.0.0.1:443", false},
		{"stdio", false},
	} {
		if got := ns.AllowsIP(tc.ip); got != tc.want {
			t.Errorf("AllowsIP(%q) = %v, want %v", tc.ip, got, tc.want)
		}
	}
	var none identity.Networks
	for _, ip := range []string{"10.0.0.1", "2001:db8::1", "", "garbage"} {
		if !none.AllowsIP(ip) {
			t.Errorf("an unrestricted credential refused %q", ip)
		}
	}
	if none.Allows(netip.Addr{}) != true || ns.Allows(netip.Addr{}) != false {
		t.Error("invalid address: allowed only when unrestricted")
	}
	if got := ns.String(); got != "10.0.0.0/8, 203.0.113.7/32, 2001:db8:1::/48" {
		t.Errorf("String = %q", got)
	}
	if got := none.String(); got != "anywhere" {
		t.Errorf("String of none = %q", got)
	}
}

// TestNetworksIPv4AnyIsNotIPv6Any: 0.0.0.0/0 admits IPv4 callers only.
func TestNetworksIPv4AnyIsNotIPv6Any(t *testing.T) {
	ns, _ := identity.ParseNetworks([]string{"0.0.0.0/0"})
	if !ns.AllowsIP("198.51.100.1") || !ns.AllowsIP("::ffff:198.51.100.1") || ns.AllowsIP("2001:db8::1") {
		t.Error("0.0.0.0/0 should admit every IPv4 address (mapped too) and no IPv6 one")
	}
}

// BenchmarkNetworksAllowsIP: the per-request check, from the address in
// text as the HTTP layer has it: unrestricted, one network, and 64 with
// the caller in the last.
func BenchmarkNetworksAllowsIP(b *testing.B) {
	var many []string
	for i := range identity.MaxNetworks - 1 {
		many = append(many, fmt.Sprintf("10.%d.0.0/16", i))
	}
	many = append(many, "192.0.2.1")
	one, _ := identity.ParseNetworks([]string{"192.0.2.0/24"})
	all, _ := identity.ParseNetworks(many)
	for name, ns := range map[string]identity.Networks{"unrestricted": nil, "one": one, "64": all} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !ns.AllowsIP("192.0.2.1") {
					b.Fatal("refused")
				}
			}
		})
	}
}
