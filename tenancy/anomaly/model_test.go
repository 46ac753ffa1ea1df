package anomaly_test

import (
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tenancy/anomaly"
)

func TestNetwork(t *testing.T) {
	for ip, want := range map[string]string{
		"198.51.100.7":           "198.51.100.0/24",
		"198.51.100.255":         "198.51.100.0/24",
		"::ffff:198.51.100.9":    "198.51.100.0/24", // mapped: IPv4
		"2001:db8:1:2::1":        "2001:db8:1::/48",
		"2001:db8:1:ffff:aa::9":  "2001:db8:1::/48", // another /64 of the same /48
		"fe80::1%eth0":           "fe80::/48",       // zone dropped
		"":                       "",
		"198.51.100.7:443":       "", // not an address
		"not an address":         "",
		"2001:db8::1/64":         "",
		"2001:0db8:0001:0000::1": "2001:db8:1::/48",
	} {
		if got := anomaly.Network(ip); got != want {
			t.Errorf("Network(%q) = %q, want %q", ip, got, want)
		}
	}
}

func TestKinds(t *testing.T) {
	for _, k := range anomaly.Kinds {
		got, err := anomaly.ParseKind(string(k))
		if err != nil || got != k {
			t.Errorf("ParseKind(%s): %v %v", k, got, err)
		}
	}
	if anomaly.DenialBurst.Suspendable() {
		t.Error("denial_burst must never suspend: anyone can name a key id")
	}
	if _, err := anomaly.ParseKind("denial"); err == nil {
		t.Error("unknown kind parsed")
	}
}

var t0 = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// observe feeds events and returns the kinds of alert raised.
func observe(s *anomaly.State, set anomaly.Settings, evs ...anomaly.Event) []anomaly.Kind {
	var out []anomaly.Kind
	for _, e := range evs {
		for _, a := range s.Observe(e, set) {
			out = append(out, a.Kind)
		}
	}
	return out
}

func ok(at time.Time, ip string) anomaly.Event {
	return anomaly.Event{At: at, Outcome: anomaly.Success, ClientIP: ip, Tool: "whoami"}
}

// TestNewNetworkFamily: what is and is not a new network.
func TestNewNetworkFamily(t *testing.T) {
	set := anomaly.DefaultSettings()
	week := set.Learning
	cases := []struct {
		name  string
		evs   []anomaly.Event
		alert bool
	}{
		{"same /24, another host", []anomaly.Event{ok(at(0), "198.51.100.1"), ok(at(week+time.Hour), "198.51.100.77")}, false},
		{"same /48, another /64", []anomaly.Event{ok(at(0), "2001:db8:1:1::1"), ok(at(week+time.Hour), "2001:db8:1:9::1")}, false},
		{"mapped address of a known /24", []anomaly.Event{ok(at(0), "198.51.100.1"), ok(at(week+time.Hour), "::ffff:198.51.100.2")}, false},
		{"new /24 after learning", []anomaly.Event{ok(at(0), "198.51.100.1"), ok(at(week+time.Hour), "203.0.113.5")}, true},
		{"new /48 after learning", []anomaly.Event{ok(at(0), "2001:db8:1::1"), ok(at(week+time.Hour), "2001:db8:2::1")}, true},
		{"new /24 while learning", []anomaly.Event{ok(at(0), "198.51.100.1"), ok(at(week-time.Hour), "203.0.113.5")}, false},
		{"denied call from a new /24", []anomaly.Event{ok(at(0), "198.51.100.1"),
			{At: at(week + time.Hour), Outcome: anomaly.Denied, ClientIP: "203.0.113.5"}}, false},
		{"failed authentication from a new /24", []anomaly.Event{ok(at(0), "198.51.100.1"),
			{At: at(week + time.Hour), Outcome: anomaly.AuthFailed, ClientIP: "203.0.113.5"}}, false},
		{"roaming: three new networks in two weeks", []anomaly.Event{ok(at(0), "198.51.100.1"), ok(at(time.Hour), "192.0.2.1"),
			ok(at(2*time.Hour), "192.0.3.1"), ok(at(3*time.Hour), "192.0.4.1"), ok(at(week+time.Hour), "203.0.113.5")}, false},
		{"roaming ended: the new networks are over two weeks old", []anomaly.Event{ok(at(0), "198.51.100.1"), ok(at(time.Hour), "192.0.2.1"),
			ok(at(2*time.Hour), "192.0.3.1"), ok(at(3*time.Hour), "192.0.4.1"), ok(at(15*24*time.Hour), "198.51.100.1"), ok(at(16*24*time.Hour), "203.0.113.5")}, true},
		{"no address (stdio)", []anomaly.Event{ok(at(0), "198.51.100.1"), ok(at(week+time.Hour), "")}, false},
		{"forgotten after 90 days, then seen again", []anomaly.Event{ok(at(0), "198.51.100.1"), ok(at(week), "192.0.2.1"),
			ok(at(100*24*time.Hour), "198.51.100.1")}, true},
	}
	for _, c := range cases {
		var s anomaly.State
		got := observe(&s, set, c.evs...)
		if fired := len(got) > 0 && got[len(got)-1] == anomaly.NewNetwork; fired != c.alert {
			t.Errorf("%s: alerts %v, want new_network at the end: %v", c.name, got, c.alert)
		}
	}
	// People only when asked.
	var s anomaly.State
	p := func(e anomaly.Event) anomaly.Event { e.Person = true; return e }
	if got := observe(&s, set, p(ok(at(0), "198.51.100.1")), p(ok(at(week+time.Hour), "203.0.113.5"))); len(got) != 0 {
		t.Errorf("a person's new network with the defaults: %v", got)
	}
	set.NewNetworkPeople = true
	if got := observe(&s, set, p(ok(at(week+2*time.Hour), "192.0.2.5"))); len(got) != 1 || got[0] != anomaly.NewNetwork {
		t.Errorf("a person's new network with NewNetworkPeople: %v", got)
	}
}

// TestDenialFamily: denials and failed authentications count together,
// within the window, once per cooldown.
func TestDenialFamily(t *testing.T) {
	set := anomaly.DefaultSettings()
	burst := func(o anomaly.Outcome, n int, start, step time.Duration) []anomaly.Event {
		var evs []anomaly.Event
		for i := range n {
			evs = append(evs, anomaly.Event{At: at(start + time.Duration(i)*step), Outcome: o, Count: 1})
		}
		return evs
	}
	for _, c := range []struct {
		name string
		evs  []anomaly.Event
		want int
	}{
		{"19 denials", burst(anomaly.Denied, 19, 0, time.Second), 0},
		{"20 denials", burst(anomaly.Denied, 20, 0, time.Second), 1},
		{"20 failed authentications", burst(anomaly.AuthFailed, 20, 0, time.Second), 1},
		{"10 and 10", append(burst(anomaly.Denied, 10, 0, time.Second), burst(anomaly.AuthFailed, 10, time.Minute, time.Second)...), 1},
		{"one aggregate of 30", []anomaly.Event{{At: at(0), Outcome: anomaly.AuthFailed, Count: 30}}, 1},
		{"20 spread over an hour", burst(anomaly.Denied, 20, 0, 3*time.Minute), 0},
		{"60 in a minute: one alert (cooldown)", burst(anomaly.Denied, 60, 0, time.Second), 1},
		{"two bursts two hours apart", append(burst(anomaly.Denied, 20, 0, time.Second), burst(anomaly.Denied, 20, 2*time.Hour, time.Second)...), 2},
		{"rate-limited calls are not denials", burst(anomaly.Limited, 40, 0, time.Second), 0},
	} {
		var s anomaly.State
		if got := observe(&s, set, c.evs...); len(got) != c.want {
			t.Errorf("%s: %v, want %d denial_burst", c.name, got, c.want)
		}
	}
}

// TestVolumeFamily: over both the floor and the factor × baseline, once
// per hour, after enough history.
func TestVolumeFamily(t *testing.T) {
	set := anomaly.DefaultSettings()
	hours := func(s *anomaly.State, n, calls int) {
		for h := range n {
			observe(s, set, anomaly.Event{At: at(time.Duration(h) * time.Hour), Outcome: anomaly.Success, Count: calls, ClientIP: "198.51.100.1"})
		}
	}
	hourAt := func(s *anomaly.State, h, calls int) []anomaly.Kind {
		var out []anomaly.Kind
		for m := range 60 {
			out = append(out, observe(s, set, anomaly.Event{At: at(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute), Outcome: anomaly.Success,
				Count: calls / 60, ClientIP: "198.51.100.1"})...)
		}
		return out
	}
	for _, c := range []struct {
		name        string
		known, base int // active hours known, calls in each
		burst       int // calls in the next hour
		want        int
	}{
		{"under the floor", 20, 5, 290, 0},
		{"over the floor, under 10x", 20, 50, 480, 0},
		{"over both", 20, 50, 600, 1},
		{"a CI key's busy baseline", 20, 500, 4800, 0},
		{"too little history", 5, 5, 6000, 0},
		{"far over: still one alert", 20, 50, 60000, 1},
	} {
		var s anomaly.State
		hours(&s, c.known, c.base)
		if got := hourAt(&s, c.known+30, c.burst); len(got) != c.want {
			t.Errorf("%s: %v, want %d volume", c.name, got, c.want)
		}
	}
	// Idle hours do not lower the baseline: a quiet night and a normal
	// morning raise nothing.
	var s anomaly.State
	hours(&s, 20, 200)
	if got := hourAt(&s, 20+14, 400); len(got) != 0 {
		t.Errorf("a morning after a quiet night: %v", got)
	}
}

// TestOffHoursFamily: an admin action at an hour the principal never
// acts, once the history is long enough; usual hours never.
func TestOffHoursFamily(t *testing.T) {
	set := anomaly.DefaultSettings()
	adm := func(d time.Duration) anomaly.Event {
		return anomaly.Event{At: at(d), Outcome: anomaly.Success, Admin: true, Tool: "set_member_role", ClientIP: "198.51.100.1"}
	}
	var s anomaly.State
	var history []anomaly.Event
	for day := range 10 { // 09:00-11:00 UTC, two a day
		history = append(history, adm(time.Duration(day)*24*time.Hour), adm(time.Duration(day)*24*time.Hour+2*time.Hour))
	}
	if got := observe(&s, set, history...); len(got) != 0 {
		t.Fatalf("usual hours: %v", got)
	}
	day := 10 * 24 * time.Hour
	if got := observe(&s, set, adm(day+3*time.Hour)); len(got) != 0 { // 12:00, within two hours of 11:00
		t.Errorf("an hour after the usual: %v", got)
	}
	if got := observe(&s, set, adm(day+18*time.Hour)); len(got) != 1 || got[0] != anomaly.OffHours { // 03:00 UTC
		t.Errorf("03:00: %v", got)
	}
	// Non-admin calls at 03:00 are not admin actions.
	if got := observe(&s, set, anomaly.Event{At: at(day + 42*time.Hour), Outcome: anomaly.Success, Tool: "list_todos", ClientIP: "198.51.100.1"}); len(got) != 0 {
		t.Errorf("a read at 03:00: %v", got)
	}
	// Too little history: nothing.
	var fresh anomaly.State
	if got := observe(&fresh, set, adm(0), adm(time.Hour), adm(9*24*time.Hour+18*time.Hour)); len(got) != 0 {
		t.Errorf("three admin actions known: %v", got)
	}
}
