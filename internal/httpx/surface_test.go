package httpx_test

import (
	"net"
	"net/http/httptest"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/internal/httpx"
)

// TestIPExtractorHopsWithPorts: behind a trusted proxy, X-Forwarded-For
// hops written with a port or brackets count as their address; from an
// untrusted peer the header still counts for nothing, however it is
// written; the request's own header is left as it came.
func TestIPExtractorHopsWithPorts(t *testing.T) {
	_, proxies, _ := net.ParseCIDR("10.0.0.0/8")
	extract := httpx.IPExtractor([]*net.IPNet{proxies})
	for _, c := range []struct{ peer, xff, want string }{
		{"10.1.1.1:1234", "203.0.113.7", "203.0.113.7"},
		{"10.1.1.1:1234", "203.0.113.7:5555", "203.0.113.7"},
		{"10.1.1.1:1234", "[2001:db8::1]:443", "2001:db8::1"},
		{"10.1.1.1:1234", "[2001:db8::1]", "2001:db8::1"},
		{"10.1.1.1:1234", "2001:db8::1", "2001:db8::1"},
		{"10.1.1.1:1234", "198.51.100.1, 203.0.113.7:5555", "203.0.113.7"}, // the nearest untrusted hop
		{"10.1.1.1:1234", "203.0.113.7:5555, 10.2.2.2:80", "203.0.113.7"},  // a trusted hop with a port is skipped
		{"10.1.1.1:1234", "198.51.100.1:1, 10.2.2.2, [::ffff:10.3.3.3]:9", "198.51.100.1"},
		{"192.0.2.9:4000", "203.0.113.7:5555", "192.0.2.9"}, // an untrusted peer's header counts for nothing
		{"192.0.2.9:4000", "[2001:db8::1]:443", "192.0.2.9"},
		{"10.1.1.1:1234", "not-an-address:80", "10.1.1.1"}, // nothing usable: the proxy itself
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.peer
		r.Header.Set("X-Forwarded-For", c.xff)
		if got := extract(r); got != c.want {
			t.Errorf("peer %s, X-Forwarded-For %q: client %q, want %q", c.peer, c.xff, got, c.want)
		}
		if got := r.Header.Get("X-Forwarded-For"); got != c.xff {
			t.Errorf("the request's header became %q (was %q)", got, c.xff)
		}
	}
}
