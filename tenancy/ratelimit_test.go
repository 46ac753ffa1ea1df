package tenancy_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// fakeGCRA admits `burst` requests per key, counts calls, and can fail.
type fakeGCRA struct {
	calls atomic.Int64
	used  map[string]int
	err   error
}

func (f *fakeGCRA) GCRA(_ context.Context, keys []string, _ []time.Duration, bursts []int) (tenancy.GCRAResult, error) {
	f.calls.Add(1)
	if f.err != nil {
		return tenancy.GCRAResult{}, f.err
	}
	r := tenancy.GCRAResult{Allowed: true}
	for i, k := range keys {
		left := bursts[i] - f.used[k]
		if left <= 0 {
			r.Allowed, r.RetryAfter = false, time.Hour
		}
		r.Remaining = append(r.Remaining, max(0, left-1))
		r.Over = append(r.Over, left <= 0)
	}
	if r.Allowed {
		for _, k := range keys {
			f.used[k]++
		}
	}
	return r, nil
}

func TestLimiterRemembersDenialsLocally(t *testing.T) {
	store := &fakeGCRA{used: map[string]int{}}
	l := tenancy.NewLimiter(store, tenancy.Limits{
		Tenant:    tenancy.Rate{PerMinute: 600, Burst: 100},
		Principal: tenancy.Rate{PerMinute: 60, Burst: 3},
	})
	defer l.Close()
	tn := &tenancy.Tenant{ID: "t1", Key: "acme.com"}
	ctx := context.Background()
	for i := range 3 {
		d, err := l.AllowRequest(ctx, tn, "alice")
		if err != nil || !d.Allowed || d.Scope != "principal" || d.Remaining != 2-i {
			t.Fatalf("request %d: %+v %v", i, d, err)
		}
	}
	d, _ := l.AllowRequest(ctx, tn, "alice")
	if d.Allowed || d.RetryAfter <= 0 || d.Scope != "principal" {
		t.Fatalf("4th request: %+v", d)
	}
	before := store.calls.Load()
	for range 1000 {
		if d, _ := l.AllowRequest(ctx, tn, "alice"); d.Allowed {
			t.Fatal("admitted while denied")
		}
	}
	if n := store.calls.Load() - before; n != 0 {
		t.Errorf("a flood of 1000 denied requests made %d database calls, want 0", n)
	}
	// Another principal of the same tenant is not affected.
	if d, _ := l.AllowRequest(ctx, tn, "bob"); !d.Allowed {
		t.Errorf("bob denied because of alice: %+v", d)
	}
}

func TestLimiterOverridesAndFailures(t *testing.T) {
	store := &fakeGCRA{used: map[string]int{}}
	l := tenancy.NewLimiter(store, tenancy.Limits{Tenant: tenancy.Rate{PerMinute: 600, Burst: 100}})
	defer l.Close()
	tn := &tenancy.Tenant{ID: "t1", RateLimit: &tenancy.Rate{PerMinute: 6, Burst: 1}}
	if r := l.TenantRate(tn); r.Burst != 1 {
		t.Errorf("override ignored: %v", r)
	}
	l.AllowRequest(context.Background(), tn, "a")
	if d, _ := l.AllowRequest(context.Background(), tn, "b"); d.Allowed || d.Scope != "tenant" {
		t.Errorf("tenant override not enforced: %+v", d)
	}
	// The database failing does not stop the service (fail open), but says so.
	store.err = errors.New("connection refused")
	d, err := l.AllowRequest(context.Background(), &tenancy.Tenant{ID: "t2"}, "c")
	if err == nil || !d.Allowed {
		t.Errorf("store failure: %+v %v", d, err)
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]float64{"600/m": 600, "10/s": 600, "3600/h": 60, "0.5/m": 0.5, " 60/min ": 60, "120/hour": 2, "1/sec": 60, "600/M": 600} {
		r, err := tenancy.ParseRate(in, 7)
		if err != nil || r.PerMinute != want || r.Burst != 7 {
			t.Errorf("ParseRate(%q, 7) = %+v, %v", in, r, err)
		}
	}
	for _, in := range []string{"off", "OFF", "0"} {
		if r, err := tenancy.ParseRate(in, 0); err != nil || !r.Off() {
			t.Errorf("%s: %+v %v", in, r, err)
		}
	}
	for _, in := range []string{"", "600", "600/d", "-1/m", "x/m", "Inf/m", "NaN/m", "0/m"} {
		if _, err := tenancy.ParseRate(in, 1); err == nil {
			t.Errorf("ParseRate(%q) accepted", in)
		}
	}
	// The burst is stated, never invented from the rate.
	for _, b := range []int{0, -1} {
		if _, err := tenancy.ParseRate("3600/h", b); err == nil {
			t.Errorf("burst %d accepted", b)
		}
	}
}
