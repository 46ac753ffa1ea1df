package tenancy

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jellydator/ttlcache/v3"
)

// Rate is a GCRA limit: PerMinute requests a minute on average, Burst of
// them at once. The zero Rate means no limit.
type Rate struct {
	PerMinute float64
	Burst     int
}

// Off reports whether the rate limits nothing.
func (r Rate) Off() bool { return r.PerMinute <= 0 }

// interval is the GCRA emission interval.
func (r Rate) interval() time.Duration {
	return time.Duration(float64(time.Minute) / r.PerMinute)
}

func (r Rate) String() string {
	if r.Off() {
		return "off"
	}
	return strconv.FormatFloat(r.PerMinute, 'f', -1, 64) + "/m burst " + strconv.Itoa(r.Burst) // in every refusal: no fmt
}

// ParseRate is the one parser of rates, for the environment
// (GATEHOUSE_*_RATE) and the CLI (tenant limits set --rate): a count per
// second, minute or hour ("10/s", "600/m", "3600/h"; also "/sec", "/min",
// "/hour") with burst, the requests admitted at once, which must be at
// least 1; or "off" (also "0") for no limit, whatever the burst.
func ParseRate(s string, burst int) (Rate, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "off" || s == "0" {
		return Rate{}, nil
	}
	n, unit, ok := strings.Cut(s, "/")
	count, err := strconv.ParseFloat(strings.TrimSpace(n), 64)
	per := map[string]float64{"s": 60, "sec": 60, "second": 60, "m": 1, "min": 1, "minute": 1, "h": 1.0 / 60, "hour": 1.0 / 60}[strings.TrimSpace(unit)]
	if !ok || err != nil || count <= 0 || per == 0 || math.IsInf(count, 0) || math.IsNaN(count) {
		return Rate{}, fmt.Errorf("%q is not a rate such as 10/s, 600/m or 3600/h (or off)", s)
	}
	if burst < 1 {
		return Rate{}, fmt.Errorf("burst %d: want 1 or more requests at once", burst)
	}
	return Rate{PerMinute: count * per, Burst: burst}, nil
}

// Limits are the default limits.
type Limits struct {
	Tenant       Rate // all requests of one tenant (a tenant's override wins)
	Principal    Rate // all requests of one principal in one tenant
	AuthFailure  Rate // failed authentications from one client IP
	Registration Rate // OAuth client registrations from one client IP
}

// LimitStore applies GCRA to several keys at once: all are charged or none.
type LimitStore interface {
	GCRA(ctx context.Context, keys []string, intervals []time.Duration, bursts []int) (GCRAResult, error)
}

// LimitReader reads GCRA state without charging (for usage reports).
type LimitReader interface {
	GCRAState(ctx context.Context, keys []string) (map[string]float64, error)
}

// Standing is how much of a limit is left now.
type Standing struct {
	Limit     Rate
	Remaining int // requests admitted right now
}

// Standing reports the tenant's and the principal's standing under their
// limits, charging nothing. A store that cannot read state reports full.
func (l *Limiter) Standing(ctx context.Context, t *Tenant, subject string) (tenant, principal Standing, err error) {
	tenant, principal = Standing{Limit: l.TenantRate(t)}, Standing{Limit: l.limits.Principal}
	tk, pk := "t:"+t.ID, "p:"+t.ID+":"+subject
	tenant.Remaining, principal.Remaining = tenant.Limit.Burst, principal.Limit.Burst
	r, ok := l.store.(LimitReader)
	if !ok {
		return tenant, principal, nil
	}
	tats, err := r.GCRAState(ctx, []string{tk, pk})
	if err != nil {
		return tenant, principal, err
	}
	now := float64(time.Now().UnixNano()) / 1e6
	left := func(s *Standing, key string) {
		tat, ok := tats[key]
		if !ok || s.Limit.Off() {
			return
		}
		iv := float64(s.Limit.interval()) / float64(time.Millisecond)
		s.Remaining = max(0, min(s.Limit.Burst, int((now-(max(tat, now)-float64(s.Limit.Burst)*iv))/iv)))
	}
	left(&tenant, tk)
	left(&principal, pk)
	return tenant, principal, nil
}

// GCRAResult is the store's answer for the keys of one request.
type GCRAResult struct {
	Allowed    bool
	RetryAfter time.Duration // when denied: until every key would admit the request
	Remaining  []int         // per key: requests it still admits now
	Over       []bool        // per key: over its limit (a reason for the denial)
}

// Decision is the outcome of a rate-limit check.
type Decision struct {
	Allowed    bool
	RetryAfter time.Duration // when denied: until the request would be admitted
	Remaining  int           // requests still admitted now, under the tightest limit
	Limit      Rate          // the tightest limit involved
	Scope      string        // "tenant", "principal" or "client": the tightest limit's scope
}

// Limiter enforces Limits through a LimitStore shared by every replica.
// A denied key is remembered here until its retry time, so a flood of
// requests that would be denied costs no database work.
type Limiter struct {
	store  LimitStore
	limits Limits
	denied *ttlcache.Cache[string, Decision]
	leases *leases // nil when the store cannot lease
}

// NewLimiter returns a Limiter; call Close to stop its janitor.
func NewLimiter(store LimitStore, limits Limits) *Limiter {
	l := &Limiter{store: store, limits: limits, denied: ttlcache.New(
		ttlcache.WithDisableTouchOnHit[string, Decision](),
		ttlcache.WithCapacity[string, Decision](1_000_000),
	)}
	go l.denied.Start()
	if ls, ok := store.(LeaseStore); ok {
		l.leases = newLeases(ls)
	}
	return l
}

// Close stops the janitor and gives back unused leased requests.
func (l *Limiter) Close() {
	l.denied.Stop()
	if l.leases != nil {
		l.leases.close()
	}
}

// Limits returns the defaults in force.
func (l *Limiter) Limits() Limits { return l.limits }

// TenantRate is the limit of a tenant: its override, or the default.
func (l *Limiter) TenantRate(t *Tenant) Rate {
	if t.RateLimit != nil {
		return *t.RateLimit
	}
	return l.limits.Tenant
}

// AllowRequest charges one request to the tenant and to the principal.
//
// With a store that can lease (LeaseStore), requests are admitted from
// this replica's leases of the two keys and reach the database only to
// renew a lease: accuracy and behaviour are in docs/scaling.md.
func (l *Limiter) AllowRequest(ctx context.Context, t *Tenant, subject string) (Decision, error) {
	ls := []limited{
		{"t:" + t.ID, l.TenantRate(t), "tenant"},
		{"p:" + t.ID + ":" + subject, l.limits.Principal, "principal"},
	}
	if l.leases != nil {
		return l.allowLeased(ctx, ls)
	}
	return l.allow(ctx, []limited{
		{"t:" + t.ID, l.TenantRate(t), "tenant"},
		{"p:" + t.ID + ":" + subject, l.limits.Principal, "principal"},
	})
}

// AuthFailureDenied reports, without touching the database, whether a client
// IP is currently refused for too many failed authentications.
func (l *Limiter) AuthFailureDenied(ip string) (Decision, bool) {
	return l.remembered([]string{"ip:" + ip})
}

// ChargeAuthFailure records a failed authentication from ip.
func (l *Limiter) ChargeAuthFailure(ctx context.Context, ip string) (Decision, error) {
	return l.allow(ctx, []limited{{"ip:" + ip, l.limits.AuthFailure, "client"}})
}

// AllowRegistration charges one OAuth dynamic client registration to ip.
func (l *Limiter) AllowRegistration(ctx context.Context, ip string) (Decision, error) {
	return l.allow(ctx, []limited{{"reg:" + ip, l.limits.Registration, "client"}})
}

type limited struct {
	key   string
	rate  Rate
	scope string
}

func (l *Limiter) allow(ctx context.Context, ls []limited) (Decision, error) {
	var keys []string
	var intervals []time.Duration
	var bursts []int
	var scopes []string
	var rates []Rate
	for _, x := range ls {
		if x.rate.Off() {
			continue
		}
		keys, intervals, bursts = append(keys, x.key), append(intervals, x.rate.interval()), append(bursts, x.rate.Burst)
		scopes, rates = append(scopes, x.scope), append(rates, x.rate)
	}
	if len(keys) == 0 {
		return Decision{Allowed: true, Remaining: -1}, nil
	}
	if d, ok := l.remembered(keys); ok {
		return d, nil
	}
	res, err := l.store.GCRA(ctx, keys, intervals, bursts)
	if err != nil || len(res.Remaining) != len(keys) || len(res.Over) != len(keys) {
		return Decision{Allowed: true, Remaining: -1}, fmt.Errorf("rate limit: %w", err)
	}
	// The tightest limit: one that denied, else the fewest remaining.
	tight := 0
	for i := range keys {
		if res.Over[i] && !res.Over[tight] || res.Over[i] == res.Over[tight] && res.Remaining[i] < res.Remaining[tight] {
			tight = i
		}
	}
	d := Decision{Allowed: res.Allowed, RetryAfter: res.RetryAfter, Remaining: res.Remaining[tight], Limit: rates[tight], Scope: scopes[tight]}
	if !d.Allowed {
		// Until its retry time a key over its limit is certainly still over
		// it: its GCRA timestamp only moves forward. Keys that were not over
		// (the tenant, when one principal floods) stay free for others.
		for i, k := range keys {
			if res.Over[i] {
				l.denied.Set(k, d, d.RetryAfter)
			}
		}
	}
	return d, nil
}

// allowLeased admits a request from this replica's leases of its keys,
// renewing the leases of keys that ran out (one statement for all of them,
// shared by concurrent requests). A key that grants nothing refuses the
// request, which is remembered until its retry time like any refusal.
func (l *Limiter) allowLeased(ctx context.Context, all []limited) (Decision, error) {
	var ls []limited
	for _, x := range all {
		if !x.rate.Off() {
			ls = append(ls, x)
		}
	}
	if len(ls) == 0 {
		return Decision{Allowed: true, Remaining: -1}, nil
	}
	keys := make([]string, len(ls))
	for i, x := range ls {
		keys[i] = x.key
	}
	if d, ok := l.remembered(keys); ok {
		return d, nil
	}
	// The tightest limit, for the RateLimit headers.
	tightest := 0
	for i, x := range ls {
		if x.rate.PerMinute < ls[tightest].rate.PerMinute {
			tightest = i
		}
	}
	for range maxLeaseRounds {
		now := time.Now()
		missing, remaining := l.leases.take(now, keys)
		if len(missing) == 0 {
			return Decision{Allowed: true, Remaining: remaining, Limit: ls[tightest].rate, Scope: ls[tightest].scope}, nil
		}
		n := len(missing)
		mk, mr, mw := make([]string, n), make([]Rate, n), make([]int, n)
		for j, i := range missing {
			mk[j], mr[j], mw[j] = ls[i].key, ls[i].rate, l.leases.want(now, ls[i].key, ls[i].rate)
		}
		res, err := l.leases.lease(ctx, mk, mr, mw)
		if err != nil {
			return Decision{Allowed: true, Remaining: -1}, fmt.Errorf("rate limit: %w", err)
		}
		refused := -1
		for j := range missing {
			if res.Granted[j] == 0 && (refused < 0 || res.RetryAfter[j] > res.RetryAfter[refused]) {
				refused = j
			}
		}
		if refused >= 0 {
			i := missing[refused]
			d := Decision{Allowed: false, RetryAfter: res.RetryAfter[refused], Remaining: 0, Limit: ls[i].rate, Scope: ls[i].scope}
			for j, i := range missing {
				if res.Granted[j] == 0 {
					l.denied.Set(ls[i].key, d, d.RetryAfter)
				}
			}
			return d, nil
		}
	}
	// Others kept emptying the renewed leases first: the keys are at
	// their limits right now.
	i := tightest
	return Decision{Allowed: false, RetryAfter: ls[i].rate.interval(), Remaining: 0, Limit: ls[i].rate, Scope: ls[i].scope}, nil
}

func (l *Limiter) remembered(keys []string) (Decision, bool) {
	for _, k := range keys {
		if item := l.denied.Get(k); item != nil {
			d := item.Value()
			d.RetryAfter = time.Until(item.ExpiresAt())
			return d, true
		}
	}
	return Decision{}, false
}
