package main

import (
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/tenancy/anomaly"
)

// loadAlerts reads the anomaly alerts' settings.
func loadAlerts(get func(string) string, bad func(name, format string, args ...any)) mcp.AlertOptions {
	o := mcp.AlertOptions{}
	set := anomaly.DefaultSettings()
	switch v := strings.ToLower(get("GATEHOUSE_ALERTS")); v {
	case "on", "true":
	case "off", "false":
		o.Off = true
	default:
		bad("GATEHOUSE_ALERTS", "%q is not on or off", v)
	}
	dur := func(name string, dst *time.Duration) {
		d, err := time.ParseDuration(get(name))
		if err != nil || d <= 0 {
			bad(name, "%q is not a positive duration such as 60s or 168h", get(name))
			return
		}
		*dst = d
	}
	dur("GATEHOUSE_ALERT_INTERVAL", &o.Interval)
	dur("GATEHOUSE_ALERT_LEARNING", &set.Learning)
	dur("GATEHOUSE_ALERT_COOLDOWN", &set.Cooldown)
	switch v := strings.ToLower(get("GATEHOUSE_ALERT_NEW_NETWORK")); v {
	case "keys":
	case "all":
		set.NewNetworkPeople = true
	default:
		bad("GATEHOUSE_ALERT_NEW_NETWORK", "%q is not keys or all", v)
	}
	n, w, ok := strings.Cut(get("GATEHOUSE_ALERT_DENIALS"), "/")
	count, err := strconv.Atoi(strings.TrimSpace(n))
	window, werr := time.ParseDuration(strings.TrimSpace(w))
	if !ok || err != nil || werr != nil || count < 1 || window <= 0 {
		bad("GATEHOUSE_ALERT_DENIALS", "%q is not count/window such as 20/10m", get("GATEHOUSE_ALERT_DENIALS"))
	} else {
		set.DenialLimit, set.DenialWindow = count, window
	}
	if f, err := strconv.ParseFloat(get("GATEHOUSE_ALERT_VOLUME_FACTOR"), 64); err != nil || f <= 1 {
		bad("GATEHOUSE_ALERT_VOLUME_FACTOR", "%q is not a number above 1", get("GATEHOUSE_ALERT_VOLUME_FACTOR"))
	} else {
		set.VolumeFactor = f
	}
	for _, p := range []struct {
		name string
		dst  *int
	}{{"GATEHOUSE_ALERT_VOLUME_FLOOR", &set.VolumeFloor}, {"GATEHOUSE_ALERT_ADMIN_HISTORY", &set.AdminMinActions}} {
		if v, err := strconv.Atoi(get(p.name)); err != nil || v < 1 {
			bad(p.name, "%q is not a positive number", get(p.name))
		} else {
			*p.dst = v
		}
	}
	for _, s := range splitList(get("GATEHOUSE_ALERT_SUSPEND")) {
		k, err := anomaly.ParseKind(strings.ToLower(s))
		switch {
		case err != nil:
			bad("GATEHOUSE_ALERT_SUSPEND", "%v", err)
		case !k.Suspendable():
			bad("GATEHOUSE_ALERT_SUSPEND", "%s alerts cannot suspend a key: anyone can send failed authentications naming a key id; only new_network, volume and off_hours_admin, which need the key's successful use, can", k)
		default:
			o.Suspend = append(o.Suspend, k)
		}
	}
	o.Settings = &set
	return o
}
