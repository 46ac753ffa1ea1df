package mcp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// ServeStdio serves MCP over in and out (stdin and stdout) to one local
// client, until the client goes away or ctx ends. The client is whoever
// token (an API key, from GATEHOUSE_API_KEY) stands for: it is checked now,
// so a bad key fails at once with a clear error, and again on every call
// (through the caches), so a key revoked or expired during the session stops
// working. Each call passes the same pipeline as over HTTP: rate limits,
// authorization, audit. Nothing but protocol messages is written to out.
func (s *Server) ServeStdio(ctx context.Context, token string, in io.Reader, out io.Writer) error {
	s.stdioToken = token
	c, err := s.stdioCaller(ctx)
	if err != nil {
		return err
	}
	s.log.Info("serving MCP on stdio", "subject", c.Principal.Subject, "tenant", c.Tenant.Key, "role", c.Role)
	return s.sdk.Run(ctx, &sdk.IOTransport{Reader: io.NopCloser(in), Writer: nopWriteCloser{out}})
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// stdioCaller establishes the caller of a stdio call, with a fresh request id.
func (s *Server) stdioCaller(ctx context.Context) (*Caller, error) {
	p, err := s.opts.Resolver.Resolve(ctx, s.stdioToken)
	if err != nil {
		return nil, fmt.Errorf("GATEHOUSE_API_KEY: %w", err)
	}
	m, err := s.opts.Tenancy.Resolve(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("GATEHOUSE_API_KEY: %w", err)
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return &Caller{Principal: p, Tenant: m.Tenant, Role: m.Role, MemberID: m.MemberID, RequestID: hex.EncodeToString(b[:]), ClientIP: "stdio", UserAgent: "stdio"}, nil
}

// errRateLimited is a stdio call refused by a rate limit.
var errRateLimited = errors.New("rate limit exceeded")

// limitStdio charges a stdio tool call to its tenant and principal (over
// HTTP the middleware does this per request).
func (s *Server) limitStdio(ctx context.Context, c *Caller, tool string) error {
	if s.opts.Limiter == nil {
		return nil
	}
	d, err := s.opts.Limiter.AllowRequest(ctx, c.Tenant, c.Principal.Subject)
	if err != nil {
		s.log.Warn("rate limit check failed; call allowed", "request_id", c.RequestID, "error", err)
	}
	if d.Allowed {
		return nil
	}
	s.audit.rateLimited(c, tool, d.Scope+" limit "+d.Limit.String())
	return fmt.Errorf("%w (%s, %s): retry in %d s", errRateLimited, d.Scope, d.Limit, retrySeconds(d))
}
