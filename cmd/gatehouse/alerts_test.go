package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tenancy/anomaly"
)

// TestAlertSettings: the defaults are the model's, every setting parses,
// and a kind that anyone could trigger (denial_burst) is refused as a
// suspension trigger with a reason.
func TestAlertSettings(t *testing.T) {
	c, err := loadConfig(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if c.Alerts.Off || len(c.Alerts.Suspend) != 0 || *c.Alerts.Settings != anomaly.DefaultSettings() || c.Alerts.Interval != time.Minute {
		t.Errorf("defaults: %+v %+v", c.Alerts, *c.Alerts.Settings)
	}
	env := map[string]string{"GATEHOUSE_ALERTS": "off", "GATEHOUSE_ALERT_DENIALS": "50/5m", "GATEHOUSE_ALERT_VOLUME_FACTOR": "20",
		"GATEHOUSE_ALERT_VOLUME_FLOOR": "1000", "GATEHOUSE_ALERT_NEW_NETWORK": "all", "GATEHOUSE_ALERT_SUSPEND": "new_network, Volume,off_hours_admin",
		"GATEHOUSE_ALERT_LEARNING": "72h", "GATEHOUSE_ALERT_ADMIN_HISTORY": "30", "GATEHOUSE_ALERT_COOLDOWN": "6h", "GATEHOUSE_ALERT_INTERVAL": "30s"}
	c, err = loadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	s := c.Alerts.Settings
	if !c.Alerts.Off || s.DenialLimit != 50 || s.DenialWindow != 5*time.Minute || s.VolumeFactor != 20 || s.VolumeFloor != 1000 ||
		!s.NewNetworkPeople || s.Learning != 72*time.Hour || s.AdminMinActions != 30 || s.Cooldown != 6*time.Hour || c.Alerts.Interval != 30*time.Second ||
		!slices.Equal(c.Alerts.Suspend, []anomaly.Kind{anomaly.NewNetwork, anomaly.Volume, anomaly.OffHours}) {
		t.Errorf("parsed: %+v %+v", c.Alerts, *s)
	}
	for name, v := range map[string]string{
		"GATEHOUSE_ALERT_SUSPEND":       "denial_burst",
		"GATEHOUSE_ALERT_DENIALS":       "20",
		"GATEHOUSE_ALERT_VOLUME_FACTOR": "1",
		"GATEHOUSE_ALERT_VOLUME_FLOOR":  "0",
		"GATEHOUSE_ALERT_NEW_NETWORK":   "people",
		"GATEHOUSE_ALERTS":              "maybe",
		"GATEHOUSE_ALERT_LEARNING":      "-1h",
	} {
		_, err := loadConfig(func(k string) string { return map[string]string{name: v}[k] })
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%s: %v", name, v, err)
		}
	}
	_, err = loadConfig(func(k string) string { return map[string]string{"GATEHOUSE_ALERT_SUSPEND": "volume,denial_burst"}[k] })
	if err == nil || !strings.Contains(err.Error(), "anyone can send failed authentications naming a key id") {
		t.Errorf("denial_burst as a suspension trigger: %v", err)
	}
}
