package mcp

import "time"

// SetAlertClock sets the clock of s's anomaly detector (tests: closing the
// minutes of failed authentications without waiting for them).
func SetAlertClock(s *Server, now func() time.Time) { s.alerts.now = now }
