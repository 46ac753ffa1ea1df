package mcp_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// serveReal serves g's server with mcp.Server.Serve (the http.Server and
// listener `gatehouse serve` uses) on a loopback port, returning its address.
func serveReal(t *testing.T, g *gatehouse) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.srv.Serve(ctx, ln, time.Second) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

func withOptions(f func(*mcp.Options)) func(*setup) { return func(s *setup) { s.options = f } }

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer reads c until the server closes it (what it answered
// before, if anything, is returned); it fails if the server still holds
// the connection after a generous wait.
func closedByServer(t *testing.T, c net.Conn, what string) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: the server still holds the connection after 20 s", what)
	}
	return string(b)
}

func requestHead(addr, key string, contentLength int) string {
	return fmt.Sprintf("POST /mcp HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"+
		"Accept: application/json\r\nContent-Length: %d\r\n\r\n", addr, key, contentLength)
}

// TestSlowClientsAreClosed: a body shorter than its Content-Length and
// headers sent a line at a time are cut off by the body and header
// time-outs, and the server still serves others.
func TestSlowClientsAreClosed(t *testing.T) {
	g := newGatehouse(t, withOptions(func(o *mcp.Options) {
		o.ReadHeaderTimeout, o.BodyTimeout = 300*time.Millisecond, 300*time.Millisecond
	}))
	key := g.key(t, "acme.com", tenancy.Developer)
	addr := serveReal(t, g)

	// A body that never completes, from an authenticated and from an
	// unauthenticated caller (whose body is never read by a handler).
	for _, k := range []string{key, "gk_bogus"} {
		c := dial(t, addr)
		fmt.Fprint(c, requestHead(addr, k, 1000)+`{"jsonrpc":"2.0",`)
		got := closedByServer(t, c, "short body")
		if strings.Contains(got, `"result"`) {
			t.Errorf("short body answered as if complete: %q", got)
		}
	}

	// Headers dripped a line every 50 ms, for as long as the server listens.
	drip := dial(t, addr)
	fmt.Fprintf(drip, "POST /mcp HTTP/1.1\r\nHost: %s\r\n", addr)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := fmt.Fprintf(drip, "X-Drip-%d: x\r\n", i); err != nil {
				return
			}
		}
	}()
	closedByServer(t, drip, "dripped headers")

	// Others are served meanwhile and after; a call that runs longer than
	// the body time-out is not cut short once its body is in.
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"query","arguments":{"sql":"select pg_sleep(1) is null as slept"}}}`
	c := dial(t, addr)
	fmt.Fprint(c, requestHead(addr, key, len(body))+body)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("a prompt client: %v %v", res, err)
	}
	if got := readBody(t, res); !strings.Contains(got, `"slept"`) || strings.Contains(got, `"isError":true`) {
		t.Errorf("a call longer than the body time-out: %q", got)
	}
}

// TestPendingConnectionsCapPerIP: one address may hold at most
// MaxPendingPerIP connections still sending their request; another is
// closed on accept, while those keep working, and once they finish new
// connections are served again.
func TestPendingConnectionsCapPerIP(t *testing.T) {
	g := newGatehouse(t, withOptions(func(o *mcp.Options) {
		o.ReadHeaderTimeout, o.BodyTimeout, o.MaxPendingPerIP = time.Minute, time.Minute, 3
	}))
	key := g.key(t, "acme.com", tenancy.Developer)
	addr := serveReal(t, g)
	body := `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	head := requestHead(addr, key, len(body))

	// Three connections stop halfway: two in their headers, one in its body.
	var slow []net.Conn
	for i := range 3 {
		c := dial(t, addr)
		if i < 2 {
			fmt.Fprint(c, head[:20])
		} else {
			fmt.Fprint(c, head)
		}
		slow = append(slow, c)
	}
	// The fourth is closed as it is accepted, before it could send anything
	// the server would read.
	extra := dial(t, addr)
	if got := closedByServer(t, extra, "fourth pending connection"); got != "" {
		t.Errorf("the connection over the cap was answered %q, want closed", got)
	}
	// The three are still there: each completes its request and is served.
	for i, c := range slow {
		switch i {
		case 2:
			fmt.Fprint(c, body)
		default:
			fmt.Fprint(c, head[20:]+body)
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("pending connection %d after completing its request: %v %v", i, res, err)
		}
	}
	// No longer pending: new connections are served, several at once.
	for range 5 {
		c := dial(t, addr)
		fmt.Fprint(c, head+body)
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("a connection after the slow ones finished: %v %v", res, err)
		}
	}
	res, err := http.Get(strings.TrimSuffix(g.url, "/mcp") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if m := readBody(t, res); !strings.Contains(m, "gatehouse_connections_refused_total 1") {
		t.Errorf("metrics do not count the refused connection")
	}
}
