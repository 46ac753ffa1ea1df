package identity

import (
	"slices"
	"strings"
)

// ParseScope splits an OAuth scope string (RFC 6749 §3.3: scope tokens
// separated by spaces, case-sensitive) into the Gatehouse scopes it names,
// each once, in the canonical order of [AllScopes]; it also reports the
// tokens it does not recognise (offline_access, openid, profile, …), in the
// order given, so a caller can say what it left out.
func ParseScope(scope string) (known, unknown []string) {
	for _, s := range strings.Fields(scope) {
		if !slices.Contains(AllScopes, s) {
			if !slices.Contains(unknown, s) {
				unknown = append(unknown, s)
			}
			continue
		}
		if !slices.Contains(known, s) {
			known = append(known, s)
		}
	}
	return SortScopes(known), unknown
}

// SortScopes orders Gatehouse scopes canonically (the order of
// [AllScopes]), in place, and returns them.
func SortScopes(scopes []string) []string {
	slices.SortStableFunc(scopes, func(a, b string) int {
		return slices.Index(AllScopes, a) - slices.Index(AllScopes, b)
	})
	return scopes
}

// UnionScopes returns the scopes of a and b, each once, canonically
// ordered.
func UnionScopes(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return SortScopes(out)
}

// IntersectScopes returns the scopes of a that are also in b, in a's order.
func IntersectScopes(a, b []string) []string {
	var out []string
	for _, s := range a {
		if slices.Contains(b, s) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
