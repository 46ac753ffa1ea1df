package authserver

import (
	"errors"
	"net/url"
	"strings"
)

// canonicalResource normalises a resource indicator (RFC 8707 §2: an
// absolute URI without a fragment) the way RFC 3986 §6.2.2 and §6.2.3 say
// equivalent URIs compare: scheme and host lower-cased, the scheme's
// default port left out, an empty path made "/", dot segments removed and
// percent-encoding normalised (unreserved characters decoded, the rest in
// one form), so "HTTPS://MCP.Example.com:443/mcp" names
// "https://mcp.example.com/mcp": the MCP authorization spec asks servers to
// accept such variants. The path and query stay case-sensitive.
func canonicalResource(s string) (string, error) {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "", errors.New("not a URI")
	case u.Scheme == "" || u.Host == "" || u.Opaque != "":
		return "", errors.New("not an absolute URI")
	case u.Fragment != "" || strings.Contains(s, "#"):
		return "", errors.New("a resource indicator has no fragment")
	case u.User != nil:
		return "", errors.New("a resource indicator has no user information")
	}
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	p := u.Path
	if p == "" {
		p = "/"
	}
	// Dot segments go (RFC 3986 §5.2.4); the decoded path is escaped again
	// in one form.
	clean := (&url.URL{Path: "/"}).ResolveReference(&url.URL{Path: p})
	out := scheme + "://" + host + (&url.URL{Path: clean.Path}).EscapedPath()
	if u.RawQuery != "" {
		out += "?" + u.RawQuery
	}
	return out, nil
}

// sameResource reports whether a requested resource indicator names the
// resource this server issues tokens for.
func (s *Server) sameResource(requested string) bool {
	c, err := canonicalResource(requested)
	if err != nil {
		return false
	}
	want, err := canonicalResource(s.cfg.Resource)
	return err == nil && c == want
}
