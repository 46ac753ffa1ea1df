package mcp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/identity"
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
	p := newPendingRequests(ctx, s.opts.ToolTimeout+5*time.Second)
	return s.sdk.Run(ctx, &sdk.IOTransport{Reader: io.NopCloser(p.reader(in)), Writer: nopWriteCloser{p.writer(out)}})
}

// pendingRequests makes stdin's end wait for the answers: a client that
// writes its last request and closes stdin at once (a script piping
// requests in) still gets every answer. The SDK closes the connection when
// its reader ends, dropping answers in flight, so the reader passes EOF on
// only once every request read has been answered (or after wait, or when
// ctx ends). Messages are newline-delimited JSON-RPC (MCP stdio transport).
type pendingRequests struct {
	ctx  context.Context
	wait time.Duration

	mu      sync.Mutex
	open    map[string]bool // ids of requests read and not yet answered
	changed chan struct{}   // closed and replaced when open shrinks
}

func newPendingRequests(ctx context.Context, wait time.Duration) *pendingRequests {
	return &pendingRequests{ctx: ctx, wait: wait, open: map[string]bool{}, changed: make(chan struct{})}
}

// message is what pendingRequests reads of a JSON-RPC message.
type message struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
}

func (p *pendingRequests) reader(in io.Reader) io.Reader {
	return &pendingReader{p: p, in: bufio.NewReader(in)}
}

func (p *pendingRequests) writer(out io.Writer) io.Writer { return &pendingWriter{p: p, out: out} }

// saw records a message read (a request opens its id) or written (a
// response closes it).
func (p *pendingRequests) saw(line []byte, read bool) {
	var m message
	if json.Unmarshal(line, &m) != nil || len(m.ID) == 0 || string(m.ID) == "null" {
		return // a notification, or not ours to judge
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case read && m.Method != "":
		p.open[string(m.ID)] = true
	case !read && m.Method == "":
		delete(p.open, string(m.ID))
		close(p.changed)
		p.changed = make(chan struct{})
	}
}

// drained waits until no request is open, wait has passed, or ctx ends.
func (p *pendingRequests) drained() {
	deadline := time.After(p.wait)
	for {
		p.mu.Lock()
		n, changed := len(p.open), p.changed
		p.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			return
		case <-p.ctx.Done():
			return
		}
	}
}

type pendingReader struct {
	p    *pendingRequests
	in   *bufio.Reader
	line []byte // what is left of the line being handed out
}

func (r *pendingReader) Read(b []byte) (int, error) {
	if len(r.line) == 0 {
		line, err := r.in.ReadBytes('\n')
		if len(line) > 0 {
			r.p.saw(line, true)
			r.line = line
		} else if err != nil {
			if err == io.EOF {
				r.p.drained()
			}
			return 0, err
		}
	}
	n := copy(b, r.line)
	r.line = r.line[n:]
	return n, nil
}

type pendingWriter struct {
	p   *pendingRequests
	out io.Writer
	buf []byte // a message not yet ended by a newline
}

func (w *pendingWriter) Write(b []byte) (int, error) {
	n, err := w.out.Write(b)
	w.buf = append(w.buf, b[:n]...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.p.saw(w.buf[:i], false)
		w.buf = w.buf[i+1:]
	}
	return n, err
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
	if p.AllowedNetworks.Restricted() && !p.AllowedNetworks.AllowsIP("127.0.0.1") && !p.AllowedNetworks.AllowsIP("::1") {
		// A local client has no source network; a restricted key counts
		// it as loopback (networks.go).
		return nil, fmt.Errorf("GATEHOUSE_API_KEY: %w", identity.Invalid("API key %s is not allowed from this network: over stdio the client is this machine, "+
			"so its allowed networks must include 127.0.0.1 or ::1", p.APIKeyID))
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return &Caller{Principal: p, Tenant: m.Tenant, Role: m.Role, MemberID: m.MemberID, RequestID: hex.EncodeToString(b[:]), ClientIP: "stdio", UserAgent: "stdio"}, nil
}

// errRateLimited is a stdio call refused by a rate limit.
var errRateLimited = errors.New("rate limit exceeded")

// limitStdio charges a stdio tool call to its tenant and principal (over
// HTTP the middleware does this per request). A refusal is a JSON-RPC
// error with the code HTTP answers carry (-32029, docs/clients.md) and
// retry_after_seconds in its data.
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
	data, _ := json.Marshal(map[string]any{"retry_after_seconds": retrySeconds(d), "scope": d.Scope})
	return &jsonrpc.Error{Code: codeRateLimited, Message: fmt.Sprintf("%v (%s, %s): retry in %d s", errRateLimited, d.Scope, d.Limit, retrySeconds(d)), Data: data}
}
