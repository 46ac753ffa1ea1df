package mcp

import (
	"net"

	"github.com/labstack/echo/v4"
)

// ipExtractor decides the client IP: the connection's peer, unless that peer
// is a trusted proxy, in which case the nearest untrusted X-Forwarded-For hop.
func ipExtractor(trusted []*net.IPNet) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, n := range trusted {
		opts = append(opts, echo.TrustIPRange(n))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}
