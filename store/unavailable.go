package store

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
)

// ErrUnavailable marks an error of a database that cannot be reached right
// now; [Unavailable] recognises it and the driver's own forms.
var ErrUnavailable = errors.New("the database is unavailable")

// Unavailable reports whether err says that the database cannot be reached
// or cannot serve right now (a transient condition: retry shortly), as
// opposed to a refusal of the statement itself: the connection was refused,
// lost or closed, the server is starting up, shutting down or in recovery
// (SQLSTATE class 08, 57P01–57P03), or it has no connection slot left
// (53300). Source: PostgreSQL's Appendix A, "Error Codes".
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrUnavailable) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false // the caller's time ran out: not the database's state
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03", pgErr.Code == "53300":
			return true
		}
		return false // the server answered: the statement (or login) was refused
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	var netErr net.Error
	switch {
	case errors.Is(err, puddle.ErrClosedPool), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ENOENT): // a unix socket that is not there while the server restarts
		return true
	case errors.As(err, &netErr):
		return true
	}
	// pgconn's own words for a connection that died under a statement.
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "connection reset") || strings.Contains(msg, "broken pipe")
}
