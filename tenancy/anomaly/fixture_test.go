package anomaly_test

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tenancy/anomaly"
)

// The traffic fixture: a synthetic but realistic mix of principals, their
// calls simulated minute by minute over several days. Each principal
// draws from its own seeded generator, so adding one never changes the
// traffic of another. Ordinary calls within five minutes from one address
// are one event with a Count (the model only adds counts up; denials,
// failed authentications, admin actions and CI runs stay one event per
// call), which keeps a three-week run of a thousand principals at a few
// seconds of CPU.

type role int

const (
	person     role = iota // signs in (OAuth): office and home, sometimes a phone
	roaming                // a person on the move: a new network most days
	devKey                 // a developer's API key on a laptop: office and home, now and then elsewhere
	ciFixed                // CI through fixed egress addresses (self-hosted runners, NAT)
	ciPool                 // CI on a hosted runner pool: any of dozens of /24s
	serviceKey             // an integration running day and night from one server
)

var roleNames = map[role]string{person: "person", roaming: "roaming person", devKey: "developer key",
	ciFixed: "CI key (fixed egress)", ciPool: "CI key (hosted runners)", serviceKey: "service key"}

type principal struct {
	id     int
	role   role
	admin  bool
	tz     int     // offset from UTC in hours
	rate   float64 // mean calls per active hour
	office string  // network prefixes: "a.b.c" (IPv4) or "2001:db8:x" (IPv6 /48)
	home   string
	phone  bool // uses a phone (mobile carrier pool) some days
	start  int  // local hour work starts
	night  int  // CI: UTC hour of the nightly run
	r      *rand.Rand
	hosts  map[string][]string // addresses used in each network
}

// mix returns n principals in fixed proportions.
func mix(seed uint64, n int) []*principal {
	ps := make([]*principal, n)
	for i := range ps {
		r := rand.New(rand.NewPCG(seed, uint64(i)))
		p := &principal{id: i, r: r, tz: []int{-8, -5, -3, 0, 1, 2, 5, 8, 9}[r.IntN(9)], start: 7 + r.IntN(4)}
		switch f := float64(i) / float64(n); {
		case f < 0.55:
			p.role = person
		case f < 0.60:
			p.role = roaming
		case f < 0.70:
			p.role = devKey
		case f < 0.80:
			p.role = ciFixed
		case f < 0.85:
			p.role = ciPool
		default:
			p.role = serviceKey
		}
		p.office = fmt.Sprintf("%d.%d.%d", 11+i%50, i/250, i%250)
		p.home = fmt.Sprintf("%d.%d.%d", 81+i%40, (i*7)/250%250, (i*13)%250)
		if r.Float64() < 0.3 {
			p.home = fmt.Sprintf("2001:db8:%x", i) // an IPv6 home: a /48 whose /64s change
		}
		p.phone = r.Float64() < 0.3
		p.admin = p.role == person && r.Float64() < 0.15
		p.night = r.IntN(6)
		switch p.role {
		case serviceKey:
			p.rate = 20 * math.Exp(r.Float64()*3) // 20 to 400 calls an hour
		case ciFixed, ciPool:
			p.rate = 20 + r.Float64()*130 // calls per CI run
		default:
			p.rate = 3 * math.Exp(r.Float64()*3.3) // 3 to 80 calls an active hour
		}
		ps[i] = p
	}
	return ps
}

func (p *principal) person() bool { return p.role == person || p.role == roaming }

// ip is an address in net: one of a few hosts (a /64 of a few, for IPv6)
// drawn once per network, as a site's handful of machines.
func (p *principal) ip(net string) string {
	hosts := p.hosts[net]
	if hosts == nil {
		for range 6 {
			if net[0] == '2' {
				hosts = append(hosts, fmt.Sprintf("%s:%x:%x::%x", net, p.r.IntN(4), p.r.IntN(65536), 1+p.r.IntN(65535)))
			} else {
				hosts = append(hosts, fmt.Sprintf("%s.%d", net, 1+p.r.IntN(254)))
			}
		}
		if p.hosts == nil {
			p.hosts = map[string][]string{}
		}
		p.hosts[net] = hosts
	}
	return hosts[p.r.IntN(len(hosts))]
}

func randomNet(r *rand.Rand) string {
	return fmt.Sprintf("%d.%d.%d", 150+r.IntN(60), r.IntN(256), r.IntN(256))
}

var simStart = time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC) // a Monday

// day generates p's events of day d, in time order.
func (p *principal) day(d int) []anomaly.Event {
	r := p.r
	base := simStart.Add(time.Duration(d) * 24 * time.Hour)
	weekday := d%7 < 5
	var evs []anomaly.Event
	// calls spreads n calls from net over the 60 minutes of hour h (UTC,
	// counted from the day's midnight, may be negative or past 23).
	calls := func(h int, n int, net string, o anomaly.Outcome, slot int) {
		if n <= 0 {
			return
		}
		var per [60]int
		for range n {
			per[r.IntN(60/slot)]++
		}
		for m, c := range per {
			if c > 0 {
				evs = append(evs, anomaly.Event{At: base.Add(time.Duration(h)*time.Hour + time.Duration(m*slot)*time.Minute + time.Duration(r.IntN(60))*time.Second),
					Outcome: o, Count: c, ClientIP: p.ip(net), Tool: "list_todos", Person: p.person()})
			}
		}
	}
	burst := func(at time.Time, n int, spread time.Duration, net string, o anomaly.Outcome, tool string) {
		for range n {
			evs = append(evs, anomaly.Event{At: at.Add(time.Duration(r.Int64N(int64(spread)))), Outcome: o, Count: 1,
				ClientIP: p.ip(net), Tool: tool, Person: p.person()})
		}
	}
	utc := func(local int) int { return local - p.tz }
	switch p.role {
	case person, roaming, devKey:
		hours := 0
		if weekday {
			hours = 8 + r.IntN(3)
		} else if r.Float64() < 0.1 {
			hours = 1 + r.IntN(2)
		}
		if hours == 0 {
			break
		}
		net := p.home
		if weekday && r.Float64() < 0.7 {
			net = p.office
		}
		if p.role == roaming && r.Float64() < 0.4 {
			net = randomNet(r) // a hotel, a client's office, a train
		}
		if p.role == devKey && r.Float64() < 0.02 {
			net = randomNet(r) // a café, a conference
		}
		mult := 0.5 + r.Float64()*1.3
		burstHour := -1
		if r.Float64() < 0.02 {
			burstHour = r.IntN(hours) // a bulk import, a big refactoring session
		}
		start := p.start
		if !weekday {
			start = 14
		}
		for i := range hours {
			h := utc(start + i)
			n := poisson(r, p.rate*mult)
			if i == burstHour {
				n = int(float64(n) * (3 + r.Float64()*5))
			}
			where := net
			if p.phone && r.Float64() < 0.005 {
				where = fmt.Sprintf("100.%d.%d", 64+p.id%8, r.IntN(4)) // the carrier's pool
			}
			calls(h, n, where, anomaly.Success, 5)
		}
		day := base.Add(time.Duration(utc(start)) * time.Hour)
		if r.Float64() < 0.05 { // an agent tries a tool it may not call, a few times
			burst(day.Add(time.Duration(r.IntN(hours*60))*time.Minute), 1+poisson(r, 3), 2*time.Minute, net, anomaly.Denied, "delete_project")
		}
		if r.Float64() < 0.005 { // an agent loops on a refused tool before giving up
			burst(day.Add(time.Duration(r.IntN(hours*60))*time.Minute), 10+r.IntN(9), 10*time.Minute, net, anomaly.Denied, "delete_project")
		}
		if p.admin && weekday {
			for range poisson(r, 1.5) {
				burst(day.Add(time.Duration(r.IntN(hours*60))*time.Minute), 1, time.Minute, net, anomaly.Success, "set_member_role")
			}
			if r.Float64() < 0.03 { // finishing something after hours
				burst(day.Add(time.Duration(hours+r.IntN(3))*time.Hour), 1, time.Hour, p.home, anomaly.Success, "revoke_api_key")
			}
		}
	case ciFixed, ciPool:
		egress := func() string {
			if p.role == ciPool {
				return fmt.Sprintf("52.%d.%d", 10+p.id%3, r.IntN(40))
			}
			if p.id%2 == 0 {
				return p.office
			}
			return []string{p.office, p.home}[r.IntN(2)] // two NAT gateways
		}
		pushes := 0
		if weekday {
			pushes = poisson(r, 6)
		}
		for range pushes {
			at := base.Add(time.Duration(utc(p.start))*time.Hour + time.Duration(r.IntN(10*60))*time.Minute)
			burst(at, poisson(r, p.rate), 10*time.Minute, egress(), anomaly.Success, "list_todos")
			if r.Float64() < 0.01 { // a job with a rotated key left in its settings
				burst(at, 1+r.IntN(3), time.Minute, egress(), anomaly.AuthFailed, "")
			}
		}
		night := base.Add(time.Duration(p.night) * time.Hour)
		burst(night, poisson(r, 3*p.rate), 30*time.Minute, egress(), anomaly.Success, "search_documents")
	case serviceKey:
		backfill := -1
		if r.Float64() < 0.01 {
			backfill = r.IntN(24)
		}
		for h := range 24 {
			n := poisson(r, p.rate*(0.8+0.4*r.Float64()))
			if h == backfill {
				n *= 5
			}
			calls(h, n, p.office, anomaly.Success, 5) // in 5-minute slots: the bulk of the events
		}
		if r.Float64() < 0.01 {
			burst(base.Add(time.Duration(r.IntN(24*60))*time.Minute), 1+r.IntN(5), 5*time.Minute, p.office, anomaly.Denied, "add_todo")
		}
	}
	slices.SortFunc(evs, func(a, b anomaly.Event) int { return a.At.Compare(b.At) })
	return evs
}

// poisson draws from a Poisson distribution of mean l (normal above 50).
func poisson(r *rand.Rand, l float64) int {
	if l <= 0 {
		return 0
	}
	if l > 50 {
		return max(0, int(math.Round(l+math.Sqrt(l)*r.NormFloat64())))
	}
	k, p, t := 0, 1.0, math.Exp(-l)
	for {
		p *= r.Float64()
		if p <= t {
			return k
		}
		k++
	}
}

// injection is a true anomaly added to one principal's traffic.
type injection struct {
	kind anomaly.Kind
	p    *principal
	at   time.Time
	evs  []anomaly.Event
}

// injections picks victims of each kind among principals whose traffic
// makes the anomaly meaningful, on day d.
func injections(ps []*principal, d int) []injection {
	base := simStart.Add(time.Duration(d) * 24 * time.Hour)
	var out []injection
	pick := func(k anomaly.Kind, n int, ok func(*principal) bool, make func(p *principal) (time.Time, []anomaly.Event)) {
		for _, p := range ps {
			if n == 0 {
				return
			}
			if ok(p) {
				at, evs := make(p)
				out = append(out, injection{kind: k, p: p, at: at, evs: evs})
				n--
			}
		}
	}
	taken := map[int]bool{}
	free := func(f func(*principal) bool) func(*principal) bool {
		return func(p *principal) bool {
			if taken[p.id] || !f(p) {
				return false
			}
			taken[p.id] = true
			return true
		}
	}
	// A stolen key used from the thief's network.
	pick(anomaly.NewNetwork, 10, free(func(p *principal) bool { return p.role == ciFixed || p.role == serviceKey || p.role == devKey }),
		func(p *principal) (time.Time, []anomaly.Event) {
			at := base.Add(13*time.Hour + time.Duration(p.id%50)*time.Minute)
			return at, []anomaly.Event{{At: at, Outcome: anomaly.Success, Count: 1, ClientIP: fmt.Sprintf("203.0.113.%d", 1+p.id%250), Tool: "list_documents"}}
		})
	// Someone guessing at a key (failed authentications naming it), or a
	// stolen read-only credential probing admin tools.
	pick(anomaly.DenialBurst, 10, free(func(p *principal) bool { return p.role != roaming }), func(p *principal) (time.Time, []anomaly.Event) {
		at := base.Add(15*time.Hour + time.Duration(p.id%30)*time.Minute)
		o := anomaly.AuthFailed
		if p.id%2 == 0 {
			o = anomaly.Denied
		}
		var evs []anomaly.Event
		for i := range 30 {
			evs = append(evs, anomaly.Event{At: at.Add(time.Duration(i) * 8 * time.Second), Outcome: o, Count: 1, ClientIP: "198.18.0.7", Tool: "create_api_key", Person: p.person()})
		}
		return at, evs
	})
	// Bulk export with a stolen credential, at night.
	pick(anomaly.Volume, 10, free(func(p *principal) bool { return p.role == person || p.role == serviceKey }), func(p *principal) (time.Time, []anomaly.Event) {
		at := base.Add(time.Duration((3-p.tz+24)%24) * time.Hour) // 03:00 local
		n := max(1500, int(25*p.rate))
		var evs []anomaly.Event
		for m := range 40 {
			evs = append(evs, anomaly.Event{At: at.Add(time.Duration(m) * time.Minute), Outcome: anomaly.Success, Count: n / 40, ClientIP: p.ip(p.office), Tool: "get_document", Person: p.person()})
		}
		return at, evs
	})
	// An admin action at 03:00 local by someone who works days.
	pick(anomaly.OffHours, 10, free(func(p *principal) bool { return p.admin }), func(p *principal) (time.Time, []anomaly.Event) {
		at := base.Add(time.Duration((3-p.tz+24)%24)*time.Hour + 17*time.Minute)
		return at, []anomaly.Event{{At: at, Outcome: anomaly.Success, Admin: true, Count: 1, ClientIP: p.ip(p.home), Tool: "create_api_key", Person: true}}
	})
	return out
}

// result is what a simulation saw.
type result struct {
	alerted   []map[int][]anomaly.Alert // per day: principal → its alerts
	byRoleDay map[role]int              // principal-days alerted, by role
}

// simulate runs every principal's traffic through the model for days,
// adding the injections; the state goes through JSON at every midnight,
// as the detector keeps it between passes.
func simulate(ps []*principal, days int, set anomaly.Settings, inj []injection) (result, error) {
	res := result{alerted: make([]map[int][]anomaly.Alert, days), byRoleDay: map[role]int{}}
	for d := range res.alerted {
		res.alerted[d] = map[int][]anomaly.Alert{}
	}
	for _, p := range ps {
		if p == nil {
			continue
		}
		var s anomaly.State
		for d := range days {
			evs := p.day(d)
			for _, in := range inj {
				if in.p == p && int(in.at.Sub(simStart)/(24*time.Hour)) == d {
					evs = append(evs, in.evs...)
				}
			}
			slices.SortFunc(evs, func(a, b anomaly.Event) int { return a.At.Compare(b.At) })
			for _, e := range evs {
				if e.Admin || e.Tool == "set_member_role" || e.Tool == "revoke_api_key" {
					e.Admin = true
				}
				for _, a := range s.Observe(e, set) {
					ad := int(a.At.Sub(simStart) / (24 * time.Hour))
					if ad >= 0 && ad < days {
						res.alerted[ad][p.id] = append(res.alerted[ad][p.id], a)
					}
				}
			}
			b, err := json.Marshal(&s)
			if err != nil {
				return res, err
			}
			s = anomaly.State{}
			if err := json.Unmarshal(b, &s); err != nil {
				return res, err
			}
		}
	}
	for _, day := range res.alerted {
		for id := range day {
			res.byRoleDay[ps[id].role]++
		}
	}
	return res, nil
}
