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
	// 60/m: an interval long enough that eight checks fit in it on a
	// loaded machine; the bound below allows for any that did not.
	step := time.Second
	admitted := 0
	start := time.Now()
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
	if refills := int(time.Since(start) / step); admitted < 5 || admitted > 5+refills {
		t.Errorf("burst of 5: admitted %d of 8 in %v (%d intervals)", admitted, time.Since(start), refills)
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

// TestLeasedLimitAcrossReplicas: three Limiters on one database (three
// replicas) leasing a tenant's allowance, hammered from goroutines released
// together: what they admit never exceeds the burst plus what the rate
// earned while they ran (leases are charged like single requests), and a
// burst is not admitted twice. Unused leases go back on Close.
func TestLeasedLimitAcrossReplicas(t *testing.T) {
	db := storetest.MustOpenDB(t)
	rate := tenancy.Rate{PerMinute: 6000, Burst: 40} // 100/s: leases of 5
	tn := &tenancy.Tenant{ID: "lease-" + time.Now().Format("150405.000000"), Key: "lease.example", RateLimit: &rate}
	limiters := make([]*tenancy.Limiter, 3)
	for i := range limiters {
		limiters[i] = tenancy.NewLimiter(db, tenancy.Limits{Principal: tenancy.Rate{PerMinute: 1e9, Burst: 1e6}})
	}
	var admitted, refused atomic.Int64
	start := make(chan struct{})
	var wg sync.WaitGroup
	began := time.Now()
	run := 1500 * time.Millisecond
	for i := range 12 {
		wg.Go(func() {
			l := limiters[i%3]
			<-start
			for time.Since(began) < run {
				d, err := l.AllowRequest(context.Background(), tn, "p"+string(rune('a'+i)))
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					admitted.Add(1)
				} else {
					refused.Add(1)
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	began = time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(began)
	for _, l := range limiters {
		l.Close()
	}
	most := float64(rate.Burst) + rate.PerMinute/60*(elapsed+tenancy.LeaseLife).Seconds()
	if got := float64(admitted.Load()); got > most {
		t.Errorf("admitted %v in %v, more than the burst plus the rate allow (%.0f)", got, elapsed, most)
	}
	if refused.Load() == 0 {
		t.Errorf("nothing refused: the load did not reach the limit (%d admitted)", admitted.Load())
	}
	// After Close every unused lease went back: the timestamp is no
	// further ahead than what was admitted explains.
	tats, err := db.GCRAState(context.Background(), []string{"t:" + tn.ID})
	if err != nil {
		t.Fatal(err)
	}
	ahead := tats["t:"+tn.ID] - float64(time.Now().UnixNano())/1e6
	if ahead > float64(rate.Burst)*600+1 {
		t.Errorf("tenant key %.0f ms ahead after Close, beyond one burst (%d ms)", ahead, rate.Burst*600)
	}
	t.Logf("admitted %d, refused %d in %v (limit: burst %d + %.0f/s)", admitted.Load(), refused.Load(), elapsed, rate.Burst, rate.PerMinute/60)
}

// TestGCRAJudgedWhenLocked: a request that waited for its key's row lock
// while others were decided is judged by the clock once it holds the
// lock, not by when it began. Another session holds the key's row, then
// (after the request is seen waiting for it) charges the key itself, as a
// request decided later would, and commits. With a limit of a billion a
// minute and a burst of a million (60 ms of tolerance) the waiting
// request, judged by its start 200+ ms back, found the key's timestamp
// past its tolerance and was refused. Members: gcra (one request) and
// gcra_lease (a replica's lease).
func TestGCRAJudgedWhenLocked(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	iv, burst := []time.Duration{60 * time.Nanosecond}, []int{1_000_000}
	for _, c := range []struct {
		name string
		call func(key string) (bool, error)
	}{
		{"gcra", func(key string) (bool, error) {
			r, err := db.GCRA(ctx, []string{key}, iv, burst)
			return r.Allowed, err
		}},
		{"gcra_lease", func(key string) (bool, error) {
			r, err := db.GCRALease(ctx, []string{key}, iv, burst, []int{1})
			return err == nil && len(r.Granted) == 1 && r.Granted[0] == 1, err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			key := "t:locked-" + c.name
			if _, err := c.call(key); err != nil { // the key exists
				t.Fatal(err)
			}
			holder, err := db.Pool().Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = holder.Rollback(ctx) }()
			if _, err := holder.Exec(ctx, "SELECT 1 FROM gatehouse.rate_limits WHERE key = $1 FOR UPDATE", key); err != nil {
				t.Fatal(err)
			}
			type result struct {
				ok  bool
				err error
			}
			done := make(chan result, 1)
			go func() {
				ok, err := c.call(key)
				done <- result{ok, err}
			}()
			// Wait until the request waits for the row lock.
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				var n int
				if err := db.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
					WHERE wait_event_type = 'Lock' AND query LIKE '%gcra%'`).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the request never waited for the row lock")
				}
			}
			time.Sleep(200 * time.Millisecond) // more than the limit's 60 ms of tolerance
			// A request decided while the first waits: it charges the key at
			// the holder's clock, 200+ ms after the waiting one began.
			if _, err := holder.Exec(ctx, "SELECT gatehouse.gcra($1, $2, $3)", []string{key}, []float64{60e-6}, burst); err != nil {
				t.Fatal(err)
			}
			if err := holder.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			r := <-done
			if r.err != nil || !r.ok {
				t.Errorf("the request that waited for the lock: allowed %v (%v); a limit of a billion a minute has room", r.ok, r.err)
			}
		})
	}
}
