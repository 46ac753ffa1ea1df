package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// ConsoleSession is a signed-in browser of the console (console/). Its id
// is known only to the browser; the database keeps its SHA-256.
type ConsoleSession struct {
	IDHash     []byte
	Subject    string          // provider-qualified
	Identity   json.RawMessage // who signed in
	TenantKey  string          // where they were placed at sign-in
	CSRFKey    []byte
	SignedInAt time.Time
	LastSeenAt time.Time
	ExpiresAt  time.Time // absolute
	UserAgent  string
	ClientIP   string
}

const selectConsoleSession = `SELECT id_hash, subject, identity, tenant_key, csrf_key, signed_in_at, last_seen_at, expires_at, user_agent, client_ip
	FROM gatehouse.console_sessions`

// CreateConsoleSession stores a new session.
func (db *DB) CreateConsoleSession(ctx context.Context, s *ConsoleSession) error {
	return db.pool.QueryRow(ctx, `INSERT INTO gatehouse.console_sessions
		(id_hash, subject, identity, tenant_key, csrf_key, expires_at, user_agent, client_ip)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING signed_in_at, last_seen_at`,
		s.IDHash, s.Subject, s.Identity, s.TenantKey, s.CSRFKey, s.ExpiresAt, CleanText(s.UserAgent, 256), CleanText(s.ClientIP, 64)).
		Scan(&s.SignedInAt, &s.LastSeenAt)
}

// FindConsoleSession returns the live session with idHash whose last use
// was within idle; ErrNotFound when there is none (unknown, expired,
// signed out, idle too long).
func (db *DB) FindConsoleSession(ctx context.Context, idHash []byte, idle time.Duration) (*ConsoleSession, error) {
	var s ConsoleSession
	err := db.pool.QueryRow(ctx, selectConsoleSession+` WHERE id_hash = $1 AND expires_at > now() AND last_seen_at > now() - make_interval(secs => $2)`,
		idHash, idle.Seconds()).Scan(&s.IDHash, &s.Subject, &s.Identity, &s.TenantKey, &s.CSRFKey, &s.SignedInAt, &s.LastSeenAt, &s.ExpiresAt, &s.UserAgent, &s.ClientIP)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return &s, err
}

// TouchConsoleSession records that a session was used now (idle timeout).
func (db *DB) TouchConsoleSession(ctx context.Context, idHash []byte) error {
	_, err := db.pool.Exec(ctx, "UPDATE gatehouse.console_sessions SET last_seen_at = now() WHERE id_hash = $1", idHash)
	return err
}

// DeleteConsoleSession signs one session out.
func (db *DB) DeleteConsoleSession(ctx context.Context, idHash []byte) error {
	_, err := db.pool.Exec(ctx, "DELETE FROM gatehouse.console_sessions WHERE id_hash = $1", idHash)
	return err
}

// DeleteConsoleSessions signs a person (subject) out everywhere and
// returns how many sessions ended.
func (db *DB) DeleteConsoleSessions(ctx context.Context, subject string) (int64, error) {
	tag, err := db.pool.Exec(ctx, "DELETE FROM gatehouse.console_sessions WHERE subject = $1", subject)
	return tag.RowsAffected(), err
}

// DeleteExpiredConsoleSessions drops sessions past their absolute timeout
// or idle for longer than idle.
func (db *DB) DeleteExpiredConsoleSessions(ctx context.Context, idle time.Duration) error {
	_, err := db.pool.Exec(ctx, "DELETE FROM gatehouse.console_sessions WHERE expires_at < now() OR last_seen_at < now() - make_interval(secs => $1)", idle.Seconds())
	return err
}
