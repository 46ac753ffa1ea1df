package store_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestGCRA: a burst is admitted at once, then requests at the average rate;
// several keys are charged together or not at all.
func TestGCRA(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	step := 100 * time.Millisecond // 600/m
	admitted := 0
	for range 8 {
		r, err := db.GCRA(ctx, []string{"k"}, []time.Duration{step}, []int{5})
		if err != nil {
			t.Fatal(err)
		}
		if r.Allowed {
			admitted++
		} else if r.RetryAfter <= 0 || r.RetryAfter > step {
			t.Errorf("retry after %v, want (0, %v]", r.RetryAfter, step)
		}
	}
	if admitted != 5 {
		t.Errorf("burst of 5: admitted %d of 8", admitted)
	}
	time.Sleep(step + 10*time.Millisecond)
	if r, _ := db.GCRA(ctx, []string{"k"}, []time.Duration{step}, []int{5}); !r.Allowed {
		t.Error("not admitted after one interval")
	}
	// Two keys: "k" is exhausted, so "fresh" must not be charged.
	r, err := db.GCRA(ctx, []string{"fresh", "k"}, []time.Duration{step, step}, []int{2, 5})
	if err != nil || r.Allowed || len(r.Over) != 2 || r.Over[0] || !r.Over[1] {
		t.Fatalf("joint check: %+v %v; want denied because of k only", r, err)
	}
	for range 2 {
		if r, _ := db.GCRA(ctx, []string{"fresh"}, []time.Duration{step}, []int{2}); !r.Allowed {
			t.Error("a key was charged by a denied joint request")
		}
	}
}

// TestGCRAConcurrent: concurrent requests never admit more than the burst.
func TestGCRAConcurrent(t *testing.T) {
	db := storetest.MustOpenDB(t)
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range 40 {
		wg.Go(func() {
			r, err := db.GCRA(context.Background(), []string{"shared"}, []time.Duration{time.Minute}, []int{10})
			if err != nil {
				t.Error(err)
			}
			if r.Allowed {
				admitted.Add(1)
			}
		})
	}
	wg.Wait()
	if admitted.Load() != 10 {
		t.Errorf("admitted %d, want exactly the burst of 10", admitted.Load())
	}
}

func TestTenantRateOverride(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "acme.com")
	if err := db.SetTenantRateLimit(ctx, tn.ID, &tenancy.Rate{PerMinute: 0.5, Burst: 3}); err != nil {
		t.Fatal(err)
	}
	got, _ := db.FindTenantByID(ctx, tn.ID)
	if got.RateLimit == nil || got.RateLimit.PerMinute != 0.5 || got.RateLimit.Burst != 3 {
		t.Errorf("override = %+v", got.RateLimit)
	}
	if err := db.SetTenantRateLimit(ctx, tn.ID, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.FindTenantByID(ctx, tn.ID); got.RateLimit != nil {
		t.Errorf("override not cleared: %+v", got.RateLimit)
	}
}

// TestGCRAHighRates: a limit of a billion a minute (an interval far below a
// microsecond) never refuses concurrent requests within its burst.
func TestGCRAHighRates(t *testing.T) {
	db := storetest.MustOpenDB(t)
	var denied atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				r, err := db.GCRA(context.Background(), []string{"t:busy"}, []time.Duration{60 * time.Nanosecond}, []int{1_000_000})
				if err != nil {
					t.Error(err)
				}
				if !r.Allowed {
					denied.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if denied.Load() != 0 {
		t.Errorf("%d of 400 requests refused under a limit of a billion a minute", denied.Load())
	}
	if n, err := db.ForgetRateLimits(context.Background()); err != nil || n != 0 {
		t.Errorf("ForgetRateLimits dropped %d fresh counters (%v)", n, err)
	}
}
