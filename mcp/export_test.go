package mcp

import "time"

// SetAlertClock sets the clock of s's anomaly detector (tests: closing the
// minutes of failed authentications without waiting for them).
func SetAlertClock(s *Server, now func() time.Time) { s.alerts.now = now }

// SetBeforeGroupCommit makes f run as each group commit of s begins,
// before its records are written (tests: holding a commit back).
func SetBeforeGroupCommit(s *Server, f func()) { s.audit.group.beforeFlush = f }

// AdmissionState reports s's calls admitted and in flight, waiting for
// admission, and records queued for the next group commit.
func AdmissionState(s *Server) (inFlight, waiting, queued int) {
	s.audit.group.mu.Lock()
	queued = len(s.audit.group.queue)
	s.audit.group.mu.Unlock()
	return s.admit.inFlight(), s.admit.waiting(), queued
}
