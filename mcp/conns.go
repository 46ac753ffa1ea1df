package mcp

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// A client that sends its request slowly (headers a byte at a time, or a
// body shorter than its Content-Length) holds a connection, a goroutine and
// a file descriptor while it does. Three bounds keep that cheap:
//
//   - the headers must arrive within ReadHeaderTimeout (http.Server);
//   - the body must arrive within BodyTimeout of the headers: a read
//     deadline set when the handler starts and lifted once the body is in
//     (http.Server's ReadTimeout would also cut long tool calls short,
//     through the connection's background read, so it is not used);
//   - one client address may have at most MaxPendingPerIP connections that
//     are still sending a request (accepted but no complete request yet);
//     more are closed as they are accepted. Addresses of trusted proxies
//     are exempt: they carry many clients.

// Defaults of the limits above.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultBodyTimeout       = 30 * time.Second
	DefaultMaxPendingPerIP   = 32
)

// pendingConns counts, per client address, the connections still sending
// a request.
type pendingConns struct {
	max     int
	trusted []*net.IPNet
	refused func() // counts a refused connection

	mu sync.Mutex
	n  map[string]int
}

// trackedConn is an accepted connection; pending says it is counted.
type trackedConn struct {
	net.Conn
	ip      string
	p       *pendingConns
	pending bool // guarded by p.mu
}

// begin counts c as pending; over reports that its address already had the
// maximum (c is then not counted).
func (p *pendingConns) begin(c *trackedConn, enforce bool) (over bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.pending || c.ip == "" {
		return false
	}
	if enforce && p.n[c.ip] >= p.max {
		return true
	}
	p.n[c.ip]++
	c.pending = true
	return false
}

// done stops counting c.
func (p *pendingConns) done(c *trackedConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !c.pending {
		return
	}
	c.pending = false
	if p.n[c.ip]--; p.n[c.ip] <= 0 {
		delete(p.n, c.ip)
	}
}

// exempt reports whether ip is a trusted proxy's (or unknown).
func (p *pendingConns) exempt(ip string) bool {
	a := net.ParseIP(ip)
	if a == nil {
		return true
	}
	for _, n := range p.trusted {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

// limitListener closes connections over the per-address limit as they are
// accepted.
type limitListener struct {
	net.Listener
	p *pendingConns
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		tc := &trackedConn{Conn: c, p: l.p}
		if !l.p.exempt(host) {
			tc.ip = host
		}
		if l.p.begin(tc, true) {
			l.p.refused()
			_ = c.Close()
			continue
		}
		return tc, nil
	}
}

// tracked finds the trackedConn under a connection net/http handed out
// (TLS wraps it).
func tracked(c net.Conn) *trackedConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	t, _ := c.(*trackedConn)
	return t
}

// connState follows a connection through its requests: a keep-alive
// connection that starts another request is pending again; one that is
// idle, hijacked or closed is not.
func (p *pendingConns) connState(c net.Conn, s http.ConnState) {
	tc := tracked(c)
	if tc == nil {
		return
	}
	switch s {
	case http.StateActive:
		p.begin(tc, false)
	case http.StateIdle, http.StateHijacked, http.StateClosed:
		p.done(tc)
	}
}

type connKey struct{}

// requestReceived wraps the server's handler: it bounds the time to read
// a request's body and notes when the whole request is in.
func (p *pendingConns) requestReceived(next http.Handler, bodyTimeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tc, _ := r.Context().Value(connKey{}).(*trackedConn)
		if r.ProtoMajor > 1 || r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			// Nothing more to receive (HTTP/2 streams share one connection:
			// its requests are not tracked one by one).
			if tc != nil {
				p.done(tc)
			}
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(bodyTimeout))
		r.Body = &receivedBody{ReadCloser: r.Body, received: func() {
			_ = rc.SetReadDeadline(time.Time{})
			if tc != nil {
				p.done(tc)
			}
		}}
		next.ServeHTTP(w, r)
	})
}

// receivedBody calls received once, when the body has been read to its
// end. A body that fails or is closed unread keeps its deadline: net/http
// then reads (discards) the rest of it within the same bound, or closes
// the connection.
type receivedBody struct {
	io.ReadCloser
	once     sync.Once
	received func()
}

func (b *receivedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.once.Do(b.received)
	}
	return n, err
}

// httpServer is the http.Server Gatehouse serves with, its listener
// wrapped to enforce the per-address limit.
func (s *Server) httpServer(ln net.Listener) (*http.Server, net.Listener) {
	p := &pendingConns{max: s.opts.MaxPendingPerIP, trusted: s.opts.TrustedProxies, n: map[string]int{},
		refused: func() { s.metrics.connsRefused.Inc() }}
	srv := &http.Server{
		Handler:           p.requestReceived(s.Handler(), s.opts.BodyTimeout),
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ConnState:         p.connState,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc := tracked(c); tc != nil {
				return context.WithValue(ctx, connKey{}, tc)
			}
			return ctx
		},
	}
	return srv, &limitListener{Listener: ln, p: p}
}
