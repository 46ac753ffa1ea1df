package identity

import (
	"errors"
	"fmt"
)

// ErrInvalidToken is wrapped by every error that means "this credential is
// not acceptable"; the HTTP layer answers 401.
var ErrInvalidToken = errors.New("invalid token")

// ErrUnavailable means the credential could not be checked because an
// identity provider or the database is failing; the HTTP layer answers 503
// with Retry-After, so clients keep their (possibly good) token.
var ErrUnavailable = errors.New("identity provider unavailable")

// TokenError is an [ErrInvalidToken] with a reason that is safe to show the
// caller (in error_description): it never contains the credential or internals.
type TokenError struct{ Reason string }

func (e *TokenError) Error() string { return "invalid token: " + e.Reason }

// Is makes errors.Is(err, ErrInvalidToken) true.
func (e *TokenError) Is(target error) bool { return target == ErrInvalidToken }

// Invalid returns a [TokenError] with a caller-safe reason.
func Invalid(format string, args ...any) error {
	return &TokenError{Reason: fmt.Sprintf(format, args...)}
}

// Reason returns the caller-safe reason of an invalid-token error, or a
// generic one.
func Reason(err error) string {
	var te *TokenError
	if errors.As(err, &te) {
		return te.Reason
	}
	return "the access token is not valid"
}
