package identity

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// MaxNetworks bounds the allowed networks one credential may carry: the
// list is checked on every call, and a list longer than this is a sign of
// a mistake (a whole address plan pasted in) rather than of a service's
// sources.
const MaxNetworks = 64

// Networks are the source networks a credential may be used from (an API
// key's allowed_networks, a certificate map entry's). The zero value (nil
// or empty) admits every address: the credential is not restricted.
//
// Entries are IPv4 and IPv6 prefixes in canonical form (RFC 4632 §3.1,
// RFC 4291 §2.3): no host bits set, IPv4 networks written as IPv4 (never
// as IPv4-mapped IPv6, RFC 4291 §2.5.5.2), no zones.
type Networks []netip.Prefix

// ParseNetworks reads a list of networks as people write them: CIDR
// prefixes (10.0.0.0/8, 2001:db8::/32) or bare addresses (203.0.113.7 is
// 203.0.113.7/32, 2001:db8::1 is /128). An IPv4-mapped IPv6 entry
// (::ffff:10.0.0.0/104, ::ffff:10.0.0.1) is stored as the IPv4 network it
// stands for. Surrounding spaces are ignored; duplicates are dropped; the
// result is sorted.
//
// It refuses, naming each bad entry by its position and text: an empty
// entry, one that is not an address or prefix, a prefix with host bits
// set (10.0.0.1/8: write 10.0.0.0/8 or 10.0.0.1), an address with a zone
// (fe80::1%eth0), a prefix that covers part of the IPv4-mapped range but
// not as IPv4, and more than [MaxNetworks] entries. Every problem is
// reported (errors.Join).
func ParseNetworks(entries []string) (Networks, error) {
	if len(entries) > MaxNetworks {
		return nil, fmt.Errorf("%d networks given; at most %d are allowed per credential (use wider prefixes)", len(entries), MaxNetworks)
	}
	var errs []error
	var out Networks
	for i, e := range entries {
		p, err := parseNetwork(strings.TrimSpace(e))
		if err != nil {
			errs = append(errs, fmt.Errorf("network %d (%q): %w", i+1, clip(e), err))
			continue
		}
		out = append(out, p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return canonical(out), nil
}

// clip cuts an entry for an error message: it is the caller's text.
func clip(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

func parseNetwork(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, errors.New("empty; give an address such as 203.0.113.7 or a network such as 10.0.0.0/8")
	}
	if strings.Contains(s, "%") {
		return netip.Prefix{}, errors.New("an address with a zone (%interface) cannot be matched; leave the zone out")
	}
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, errors.New("not a network: want an address and prefix length such as 10.0.0.0/8 or 2001:db8::/32")
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, errors.New("not an IP address or network: want 203.0.113.7, 10.0.0.0/8, 2001:db8::1 or 2001:db8::/32")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, errors.New("covers IPv4-mapped addresses only in part; write the IPv4 network instead (such as 10.0.0.0/8)")
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("has host bits set: write the network %s, or the single address %s", m, p.Addr())
	}
	return p, nil
}

// canonical sorts and de-duplicates.
func canonical(ns Networks) Networks {
	if len(ns) == 0 {
		return nil
	}
	slices.SortFunc(ns, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(ns)
}

// Restricted reports whether the credential is limited to some networks.
func (ns Networks) Restricted() bool { return len(ns) > 0 }

// Allows reports whether a call from addr may use the credential: always
// when ns is empty; else when addr, as an IPv4 address if it is
// IPv4-mapped and without its zone, lies in one of the networks. An
// invalid addr (the client address could not be read) is allowed only by
// an unrestricted credential.
func (ns Networks) Allows(addr netip.Addr) bool {
	if len(ns) == 0 {
		return true
	}
	if !addr.IsValid() {
		return false
	}
	addr = addr.Unmap().WithZone("")
	for _, p := range ns {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// AllowsIP is Allows for an address in text, as the HTTP layer has it
// (echo's RealIP): one that does not parse is allowed only by an
// unrestricted credential. Brackets around IPv6 addresses are tolerated.
func (ns Networks) AllowsIP(ip string) bool {
	if len(ns) == 0 {
		return true
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(ip), "["), "]"))
	if err != nil {
		return false
	}
	return ns.Allows(a)
}

// Strings are the networks in canonical text (10.0.0.0/8, 203.0.113.7/32).
func (ns Networks) Strings() []string {
	out := make([]string, len(ns))
	for i, p := range ns {
		out[i] = p.String()
	}
	return out
}

// String is the networks separated by ", ", or "anywhere" when the list
// admits every address.
func (ns Networks) String() string {
	if len(ns) == 0 {
		return "anywhere"
	}
	return strings.Join(ns.Strings(), ", ")
}
