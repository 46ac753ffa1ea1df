package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/testdeps"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// binary builds the gatehouse binary once per test run.
func binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gatehouse-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "gatehouse")
		if out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// nodeDir is where the end-to-end tests' npm packages are installed; it
// skips t where Node.js or the packages are missing (testdeps.Node).
func nodeDir(t *testing.T) string {
	t.Helper()
	testdeps.Need(t, testdeps.Node)
	return testdeps.E2EDir()
}

// nodeCmd runs the pinned Node.js (testdeps.Node) in nodeDir with args: a
// script, or the name of an installed npm program (node_modules/.bin). The
// pinned node comes first on PATH, so anything it starts runs on it too.
func nodeCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	node := testdeps.Need(t, testdeps.Node)
	dir := testdeps.E2EDir()
	if len(args) > 0 && !strings.Contains(args[0], ".") {
		args[0] = filepath.Join(dir, "node_modules", ".bin", args[0])
	}
	cmd := exec.Command(node, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(node)+string(os.PathListSeparator)+os.Getenv("PATH"))
	return cmd
}

// server is a running `gatehouse serve`.
type server struct {
	cmd     *exec.Cmd
	base    string
	dataDir string
	env     []string
	logs    *syncBuffer
	banner  string // stdout up to the end of the first-start banner, if any
	exited  chan error
	done    bool
}

// runBinary runs `gatehouse serve` on the embedded PostgreSQL in a fresh
// data directory with extra environment settings, and waits until ready.
func runBinary(t testing.TB, extra ...string) *server {
	t.Helper()
	return runBinaryOn(t, filepath.Join(storetest.TempDir(t), "data"), extra...)
}

// runBinaryOn runs `gatehouse serve` on the embedded PostgreSQL in dataDir
// (joining the cluster if another server runs there).
func runBinaryOn(t testing.TB, dataDir string, extra ...string) *server {
	t.Helper()
	addr := freeAddr(t)
	s := &server{base: "http://" + addr, dataDir: dataDir, logs: &syncBuffer{}, exited: make(chan error, 1)}
	_, err := os.Stat(dataDir)
	fresh := os.IsNotExist(err) // a first start on the embedded database: the banner follows readiness
	for _, kv := range extra {
		if strings.HasPrefix(kv, "GATEHOUSE_TLS_CERT=") && kv != "GATEHOUSE_TLS_CERT=" {
			s.base = "https://" + addr
		}
		if strings.HasPrefix(kv, "DATABASE_URL=") && kv != "DATABASE_URL=" {
			fresh = false // no banner without a terminal on an external database
		}
	}
	s.env = append(os.Environ(), "GATEHOUSE_ADDR="+addr, "GATEHOUSE_DATA_DIR="+s.dataDir, "DATABASE_URL=")
	s.env = append(s.env, extra...)
	s.cmd = exec.Command(binary(t), "serve")
	s.cmd.Env = s.env
	stdout, _ := s.cmd.StdoutPipe()
	s.cmd.Stderr = s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !s.done {
			// SIGTERM, so that a server that started the embedded PostgreSQL
			// stops it; SIGKILL would leave the cluster running.
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.exited:
			case <-time.After(30 * time.Second):
				_ = s.cmd.Process.Kill()
				<-s.exited
			}
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.logs.String())
		}
	})
	// The first-start banner comes once the server serves; later starts
	// print none. Keep the lines up to its end, drain the rest (a full pipe
	// would block the server).
	banner := make(chan string, 1)
	go func() {
		var b strings.Builder
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			if !sent {
				b.WriteString(sc.Text() + "\n")
				if strings.Contains(sc.Text(), "More keys:") {
					banner <- b.String()
					sent = true
				}
			}
		}
		if !sent {
			banner <- b.String()
		}
		s.exited <- s.cmd.Wait()
	}()
	waitReady(t, s.base)
	wait := 200 * time.Millisecond // no banner on this start, unless the data dir is new
	if fresh {
		wait = 30 * time.Second
	}
	select {
	case s.banner = <-banner:
	case <-time.After(wait):
	}
	return s
}

// cli runs a gatehouse command against the server's database.
func (s *server) cli(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command(s.cmd.Path, args...)
	cmd.Env = s.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("gatehouse %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// inspector runs MCP Inspector's CLI against the server with a bearer token.
func (s *server) inspector(t *testing.T, token string, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"mcp-inspector", "--cli", s.base + "/mcp",
		"--transport", "http", "--header", "Authorization: Bearer " + token}, args...)
	cmd := nodeCmd(t, full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%w: %s", err, stderr.String())
	}
	return string(out), nil
}

// stop sends SIGTERM and waits for a clean exit.
func (s *server) stop(t testing.TB) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.exited:
		s.done = true
		if err != nil {
			t.Errorf("server exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not exit within 30s of SIGTERM")
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitReady(t testing.TB, base string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := http.DefaultClient
	if strings.HasPrefix(base, "https://") {
		// Readiness only; the tests check the certificate themselves.
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	}
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
		if res, err := client.Do(req); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("server not ready within 60s")
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
