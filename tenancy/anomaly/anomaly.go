package anomaly

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Kind names a kind of alert.
type Kind string

// The kinds of alert.
const (
	NewNetwork  Kind = "new_network"
	DenialBurst Kind = "denial_burst"
	Volume      Kind = "volume"
	OffHours    Kind = "off_hours_admin"
)

// Kinds lists every kind, in a stable order (for metrics and docs).
var Kinds = []Kind{NewNetwork, DenialBurst, Volume, OffHours}

// Suspendable reports whether an alert of kind k may suspend the API key
// that caused it: only kinds raised by the key's successful use (a call
// that ran from a new network, a volume of authenticated calls, an admin
// action). DenialBurst never may: anyone can send failed authentications
// naming a key id (the id is public), so it would let anyone switch a key
// off.
func (k Kind) Suspendable() bool { return k == NewNetwork || k == Volume || k == OffHours }

// ParseKind returns the kind named s.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("unknown alert kind %q (known: new_network, denial_burst, volume, off_hours_admin)", s)
}

// Outcome is what became of one request, as the audit log tells it.
type Outcome int

// Outcomes.
const (
	Success    Outcome = iota // the tool ran (ALLOWED, or ERROR: it failed while running)
	Denied                    // refused by role or scope (DENIED)
	Limited                   // refused by a rate or concurrency limit (RATE_LIMITED)
	AuthFailed                // a failed authentication naming the principal's API key
)

// Event is one observation of a principal: an audit record, or an
// aggregate of failed authentications naming its key.
type Event struct {
	At       time.Time
	Outcome  Outcome
	Tool     string
	Admin    bool   // the tool needs the mcp:admin scope
	ClientIP string // as recorded; "" when unknown (stdio)
	Count    int    // records aggregated into this one (0 counts as 1)
	Ref      string // where it came from (an audit record id), quoted in evidence
	// Person: the principal signed in (OAuth, federated token); false for
	// API keys and client certificates (see [Settings.NewNetworkPeople]).
	Person bool
}

// Settings are the thresholds; [DefaultSettings] gives the defaults whose
// false-positive rate docs/alerts.md reports.
type Settings struct {
	Learning time.Duration // history before NewNetwork and OffHours may fire
	// NewNetworkPeople: NewNetwork also fires for people who sign in, not
	// only for API keys and certificates. Off by default: people carry
	// laptops and phones between networks every day, and their tokens are
	// short-lived (docs/alerts.md gives the false-positive rate of both).
	NewNetworkPeople bool
	RoamLimit        int // new networks within RoamWindow that make a principal roaming
	RoamWindow       time.Duration
	NetworkTTL       time.Duration // a network unused this long is forgotten
	DenialLimit      int           // denials and failed authentications within DenialWindow
	DenialWindow     time.Duration
	VolumeFactor     float64 // times the baseline
	VolumeFloor      int     // calls per hour below which Volume never fires
	VolumeAlpha      float64 // weight of the newest active hour in the baseline
	VolumeMinHours   int     // active hours known before Volume may fire
	AdminMinActions  int     // admin actions known before OffHours may fire
	AdminMinShare    float64 // share of admin actions within ±2 h below which an hour is unusual
	Cooldown         time.Duration
}

// DefaultSettings returns the default thresholds.
func DefaultSettings() Settings {
	return Settings{
		Learning:        7 * 24 * time.Hour,
		RoamLimit:       3,
		RoamWindow:      14 * 24 * time.Hour,
		NetworkTTL:      90 * 24 * time.Hour,
		DenialLimit:     20,
		DenialWindow:    10 * time.Minute,
		VolumeFactor:    10,
		VolumeFloor:     300,
		VolumeAlpha:     0.1,
		VolumeMinHours:  8,
		AdminMinActions: 10,
		AdminMinShare:   0.01,
		Cooldown:        time.Hour,
	}
}

// Alert is one alert raised by [State.Observe].
type Alert struct {
	Kind     Kind
	At       time.Time
	Summary  string         // one line for people
	Evidence map[string]any // the figures behind it (JSON-encodable)
	Tool     string         // the tool of the record that raised it, if any
	ClientIP string         // its client address, if any
}

// Network returns the network of a client address: its IPv4 /24 or IPv6
// /48 prefix ("198.51.100.0/24", "2001:db8:1::/48"), or "" when ip is not
// an address.
func Network(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	a = a.Unmap().WithZone("")
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return ""
	}
	return p.String()
}

// maxNetworks bounds the networks remembered per principal (the least
// recently used is forgotten first).
const maxNetworks = 64

// State is what is known of one principal. It is kept as JSON between
// passes (field names are short: one row per active principal).
type State struct {
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	// Networks known, with their last use.
	Nets []Net `json:"nets,omitempty"`
	// When each network after the first was first seen (within RoamWindow).
	NewNets []time.Time `json:"new_nets,omitempty"`
	// Volume: the current hour and its count, the baseline and how many
	// active hours it has seen.
	Hour        time.Time `json:"hour"`
	HourCount   int       `json:"hour_n"`
	Baseline    float64   `json:"base"`
	ActiveHours int       `json:"hours"`
	// Denials and failed authentications per minute, within DenialWindow.
	Denials []Bucket `json:"denials,omitempty"`
	// Admin actions by UTC hour of day, and when the first was seen.
	AdminHours [24]float64 `json:"admin_hours"`
	AdminN     int         `json:"admin_n"`
	AdminFirst time.Time   `json:"admin_first"`
	// The last alert of each kind (for the cooldown).
	Alerted map[Kind]time.Time `json:"alerted,omitempty"`

	lastIP, lastNet string // the last address seen and its network (not kept)
}

// Net is a known network and its last use.
type Net struct {
	Prefix string    `json:"p"`
	Last   time.Time `json:"t"`
}

// Bucket counts denials and failed authentications in one minute.
type Bucket struct {
	At     time.Time `json:"t"`
	Denied int       `json:"d,omitempty"`
	Failed int       `json:"f,omitempty"`
}

// Observe learns from e and returns the alerts it raises (usually none).
// Events should come in time order; a few out of order (records of
// different replicas) only blur the windows a little.
func (s *State) Observe(e Event, set Settings) []Alert {
	if e.Count <= 0 {
		e.Count = 1
	}
	if s.First.IsZero() || e.At.Before(s.First) {
		s.First = e.At
	}
	if e.At.After(s.Last) {
		s.Last = e.At
	}
	var out []Alert
	add := func(a *Alert) {
		if a == nil {
			return
		}
		if last, ok := s.Alerted[a.Kind]; ok && e.At.Sub(last) < set.Cooldown && !e.At.Before(last) {
			return
		}
		if s.Alerted == nil {
			s.Alerted = map[Kind]time.Time{}
		}
		s.Alerted[a.Kind] = e.At
		a.At, a.Tool, a.ClientIP = e.At, e.Tool, e.ClientIP
		if e.Ref != "" {
			a.Evidence["record"] = e.Ref
		}
		out = append(out, *a)
	}
	switch e.Outcome {
	case AuthFailed:
		add(s.denial(e, set))
		return out // not a call: no volume, no network
	case Denied:
		add(s.denial(e, set))
	case Success:
		add(s.network(e, set))
		if e.Admin {
			add(s.offHours(e, set))
		}
	}
	add(s.volume(e, set))
	return out
}

// network learns e's network; a new one alerts once learning is over,
// unless the principal roams.
func (s *State) network(e Event, set Settings) *Alert {
	if e.ClientIP != s.lastIP || s.lastIP == "" { // consecutive records mostly share an address
		s.lastIP, s.lastNet = e.ClientIP, Network(e.ClientIP)
	}
	p := s.lastNet
	if p == "" {
		return nil
	}
	for i := range s.Nets {
		if s.Nets[i].Prefix != p {
			continue
		}
		if e.At.Sub(s.Nets[i].Last) <= set.NetworkTTL {
			if e.At.After(s.Nets[i].Last) {
				s.Nets[i].Last = e.At
			}
			return nil
		}
		break // known once, unused for NetworkTTL: forgotten (below)
	}
	// A network not among those used within NetworkTTL: forget those, and
	// new-network times older than RoamWindow.
	s.Nets = slices.DeleteFunc(s.Nets, func(n Net) bool { return e.At.Sub(n.Last) > set.NetworkTTL })
	s.NewNets = slices.DeleteFunc(s.NewNets, func(t time.Time) bool { return e.At.Sub(t) > set.RoamWindow })
	known := make([]string, 0, len(s.Nets))
	for _, n := range s.Nets {
		known = append(known, n.Prefix)
	}
	first := len(s.Nets) == 0
	recent := len(s.NewNets)
	if len(s.Nets) >= maxNetworks {
		oldest := 0
		for i, n := range s.Nets {
			if n.Last.Before(s.Nets[oldest].Last) {
				oldest = i
			}
		}
		s.Nets = slices.Delete(s.Nets, oldest, oldest+1)
	}
	s.Nets = append(s.Nets, Net{Prefix: p, Last: e.At})
	if first {
		return nil
	}
	s.NewNets = append(s.NewNets, e.At)
	if e.At.Sub(s.First) < set.Learning || recent >= set.RoamLimit || (e.Person && !set.NewNetworkPeople) {
		return nil
	}
	if len(known) > 8 {
		known = known[len(known)-8:]
	}
	return &Alert{
		Kind:    NewNetwork,
		Summary: fmt.Sprintf("first call from network %s (client %s); known networks: %d", p, e.ClientIP, len(s.Nets)-1),
		Evidence: map[string]any{"network": p, "client_ip": e.ClientIP, "known_networks": known,
			"new_networks_recently": recent, "history_since": s.First.UTC().Format(time.RFC3339)},
	}
}

// denial counts e in the denial window.
func (s *State) denial(e Event, set Settings) *Alert {
	m := e.At.Truncate(time.Minute)
	s.Denials = slices.DeleteFunc(s.Denials, func(b Bucket) bool { return !e.At.Before(b.At.Add(set.DenialWindow)) })
	i := slices.IndexFunc(s.Denials, func(b Bucket) bool { return b.At.Equal(m) })
	if i < 0 {
		s.Denials = append(s.Denials, Bucket{At: m})
		i = len(s.Denials) - 1
	}
	if e.Outcome == AuthFailed {
		s.Denials[i].Failed += e.Count
	} else {
		s.Denials[i].Denied += e.Count
	}
	denied, failed := 0, 0
	for _, b := range s.Denials {
		denied += b.Denied
		failed += b.Failed
	}
	if denied+failed < set.DenialLimit {
		return nil
	}
	return &Alert{
		Kind: DenialBurst,
		Summary: fmt.Sprintf("%d denials and %d failed authentications naming this key within %s (threshold %d)",
			denied, failed, set.DenialWindow, set.DenialLimit),
		Evidence: map[string]any{"denied": denied, "failed_authentications": failed,
			"window": set.DenialWindow.String(), "threshold": set.DenialLimit},
	}
}

// threshold is the hour's call count above which Volume fires.
func (s *State) threshold(set Settings) float64 {
	return max(float64(set.VolumeFloor), set.VolumeFactor*s.Baseline)
}

// volume counts e in its hour, closing earlier hours into the baseline.
func (s *State) volume(e Event, set Settings) *Alert {
	h := e.At.Truncate(time.Hour)
	if h.After(s.Hour) {
		if s.HourCount > 0 {
			c := float64(s.HourCount)
			if s.ActiveHours >= set.VolumeMinHours { // learnt: a burst enters capped
				c = min(c, s.threshold(set))
			}
			if s.ActiveHours == 0 {
				s.Baseline = c
			} else {
				s.Baseline = set.VolumeAlpha*c + (1-set.VolumeAlpha)*s.Baseline
			}
			s.ActiveHours++
		}
		s.Hour, s.HourCount = h, 0
	}
	before := s.HourCount
	s.HourCount += e.Count
	th := s.threshold(set)
	if s.ActiveHours < set.VolumeMinHours || float64(s.HourCount) <= th || float64(before) > th {
		return nil
	}
	return &Alert{
		Kind: Volume,
		Summary: fmt.Sprintf("%d calls in the hour from %s, over %.0f (%.0f× a baseline of %.1f calls per active hour, floor %d)",
			s.HourCount, s.Hour.UTC().Format("2006-01-02T15:04Z"), th, set.VolumeFactor, s.Baseline, set.VolumeFloor),
		Evidence: map[string]any{"hour": s.Hour.UTC().Format(time.RFC3339), "calls": s.HourCount, "baseline": round(s.Baseline),
			"factor": set.VolumeFactor, "floor": set.VolumeFloor, "threshold": round(th), "active_hours_known": s.ActiveHours},
	}
}

// offHours checks an admin action's hour against the principal's history,
// then learns it.
func (s *State) offHours(e Event, set Settings) *Alert {
	h := e.At.UTC().Hour()
	var a *Alert
	if s.AdminN >= set.AdminMinActions && e.At.Sub(s.AdminFirst) >= set.Learning {
		var total, near float64
		for i, c := range s.AdminHours {
			total += c
			if d := min((i-h+24)%24, (h-i+24)%24); d <= 2 {
				near += c
			}
		}
		if total > 0 && near/total < set.AdminMinShare {
			a = &Alert{
				Kind: OffHours,
				Summary: fmt.Sprintf("admin action %s at %02d:00 UTC; %.1f%% of this principal's %d admin actions were within two hours of it",
					e.Tool, h, 100*near/total, s.AdminN),
				Evidence: map[string]any{"tool": e.Tool, "hour_utc": h, "share_nearby": round(near / total),
					"min_share": set.AdminMinShare, "admin_actions_known": s.AdminN, "hours_histogram": s.AdminHours},
			}
		}
	}
	if s.AdminN == 0 || e.At.Before(s.AdminFirst) {
		s.AdminFirst = e.At
	}
	s.AdminN++
	s.AdminHours[h]++
	if s.AdminN%1000 == 0 { // keep the histogram recent: halve it now and then
		for i := range s.AdminHours {
			s.AdminHours[i] /= 2
		}
	}
	return a
}

func round(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }
