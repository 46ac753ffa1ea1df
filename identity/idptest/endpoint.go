package idptest

import (
	"net/http"
	"sync"
	"testing"
	"time"
)

// Response is a fixed HTTP answer, used to make an [Endpoint] fail.
type Response struct {
	Status int
	// Header is set on the answer; Content-Type defaults to
	// "application/json; charset=utf-8".
	Header map[string]string
	Body   string
}

func (c Response) write(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	for k, v := range c.Header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(c.Status)
	_, _ = w.Write([]byte(c.Body))
}

// Endpoint is one endpoint of a fake provider API. It counts its calls and
// can be made to fail or to answer slowly. It is safe for concurrent use.
type Endpoint struct {
	errorBody   func(status int) string // the provider's error body for FailStatus
	contentType string                  // of FailStatus answers

	mu    sync.Mutex
	calls int
	fail  *Response
	delay time.Duration
}

func newEndpoint(contentType string, errorBody func(status int) string) *Endpoint {
	return &Endpoint{contentType: contentType, errorBody: errorBody}
}

// Calls is the number of requests the endpoint has received, answered or
// failed.
func (e *Endpoint) Calls() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls
}

// Fail makes the endpoint answer r to every request from now on.
func (e *Endpoint) Fail(r Response) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fail = &r
}

// FailStatus makes the endpoint answer status, with the provider's usual
// error body, to every request from now on.
func (e *Endpoint) FailStatus(status int) {
	e.Fail(Response{Status: status, Header: map[string]string{"Content-Type": e.contentType}, Body: e.errorBody(status)})
}

// Restore makes the endpoint answer normally again after Fail.
func (e *Endpoint) Restore() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fail = nil
}

// SetDelay makes the endpoint wait d before answering each request (or
// until the request is cancelled); 0 answers at once.
func (e *Endpoint) SetDelay(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.delay = d
}

// enter counts a request, waits the configured delay and, if the endpoint
// is made to fail, writes the failure and reports true.
func (e *Endpoint) enter(w http.ResponseWriter, r *http.Request) bool {
	e.mu.Lock()
	e.calls++
	fail, delay := e.fail, e.delay
	e.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
		}
		t.Stop()
	}
	if fail != nil {
		fail.write(w)
	}
	return fail != nil
}

// reporter records a fake's complaints about what it was sent as test
// errors while the test runs, and drops them once it has ended (calling
// Errorf then would panic).
type reporter struct {
	tb   testing.TB
	mu   sync.Mutex
	done bool
}

func newReporter(tb testing.TB) *reporter {
	r := &reporter{tb: tb}
	tb.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.done = true
	})
	return r
}

func (r *reporter) errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.done {
		r.tb.Errorf(format, args...)
	}
}
