package github

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// authorization is the part of GitHub's "Check a token" answer Gatehouse
// reads.
type authorization struct {
	App struct {
		ClientID string `json:"client_id"`
	} `json:"app"`
	ExpiresAt *time.Time `json:"expires_at"` // null: the token does not expire
}

// user is the part of GitHub's "Get the authenticated user" answer Gatehouse
// reads. Its public profile "email" is deliberately ignored: it is not
// necessarily verified.
type user struct {
	ID    int64  `json:"id"`
	Login string `json:"login"`
	Name  string `json:"name"` // may be null
}

// email is one entry of "List email addresses for the authenticated user".
type email struct {
	Email    string `json:"email"`
	Primary  bool   `json:"primary"`
	Verified bool   `json:"verified"`
}

// checkToken proves the token was issued to our app (POST
// /applications/{client_id}/token, Basic auth with the app's credentials)
// and returns its expiry (zero: none).
func (v *verifier) checkToken(ctx context.Context, token string) (time.Time, error) {
	body, err := json.Marshal(map[string]string{"access_token": token})
	if err != nil {
		return time.Time{}, fmt.Errorf("github: encoding the token check: %w", err)
	}
	req, err := v.newRequest(ctx, http.MethodPost, v.checkURL, bytes.NewReader(body))
	if err != nil {
		return time.Time{}, err
	}
	req.SetBasicAuth(v.clientID, v.clientSecret)
	req.Header.Set("Content-Type", "application/json")
	var a authorization
	err = identity.DoJSON(v.client, req, &a)
	switch {
	case err == nil:
	case rateLimited(err):
		return time.Time{}, upstream("checking the token", err)
	case identity.StatusIs(err, http.StatusNotFound) && isPAT(token):
		return time.Time{}, identity.Invalid(reasonPAT)
	case identity.StatusIs(err, http.StatusNotFound, http.StatusUnprocessableEntity, http.StatusForbidden):
		return time.Time{}, identity.Invalid(reasonNotOurs)
	case identity.StatusIs(err, http.StatusUnauthorized):
		return time.Time{}, fmt.Errorf("%w: github: GitHub rejected the configured client id/secret (401 from POST %s); fix the GitHub app credentials",
			identity.ErrUnavailable, v.checkURL)
	default:
		return time.Time{}, upstream("checking the token", err)
	}
	if a.App.ClientID != v.clientID {
		return time.Time{}, identity.Invalid(reasonNotOurs)
	}
	return expiryOf(a.ExpiresAt), nil
}

// user reads the token's owner (GET /user).
func (v *verifier) user(ctx context.Context, token string) (*user, error) {
	req, err := v.bearerRequest(ctx, v.userURL, token)
	if err != nil {
		return nil, err
	}
	var u user
	err = identity.DoJSON(v.client, req, &u)
	switch {
	case err == nil:
	case rateLimited(err):
		return nil, upstream("reading the user", err)
	case identity.StatusIs(err, http.StatusUnauthorized, http.StatusForbidden):
		return nil, identity.Invalid(reasonNotOurs) // revoked since the check
	default:
		return nil, upstream("reading the user", err)
	}
	if u.ID <= 0 {
		return nil, fmt.Errorf("%w: github: GET %s answered without a user id", identity.ErrUnavailable, v.userURL)
	}
	return &u, nil
}

// verifiedPrimaryEmail returns the user's email that is both primary and
// verified (GET /user/emails), or "" when there is none or the token may not
// read emails (no user:email scope, or no email permission for a GitHub App).
func (v *verifier) verifiedPrimaryEmail(ctx context.Context, token string) (string, error) {
	req, err := v.bearerRequest(ctx, v.emailsURL, token)
	if err != nil {
		return "", err
	}
	var emails []email
	err = identity.DoJSON(v.client, req, &emails)
	switch {
	case err == nil:
	case rateLimited(err):
		return "", upstream("listing the user's emails", err)
	case identity.StatusIs(err, http.StatusUnauthorized):
		return "", identity.Invalid(reasonNotOurs) // revoked since the check
	case identity.StatusIs(err, http.StatusForbidden, http.StatusNotFound):
		return "", nil
	default:
		return "", upstream("listing the user's emails", err)
	}
	for _, e := range emails {
		if e.Primary && e.Verified {
			return e.Email, nil
		}
	}
	return "", nil
}

func (v *verifier) bearerRequest(ctx context.Context, endpoint, token string) (*http.Request, error) {
	req, err := v.newRequest(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return req, nil
}

// newRequest returns a request carrying the headers GitHub recommends.
func (v *verifier) newRequest(ctx context.Context, method, endpoint string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, endpoint, body)
	if err != nil {
		return nil, fmt.Errorf("github: %w", err)
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	req.Header.Set("User-Agent", "gatehouse")
	return req, nil
}

// rateLimited reports whether err is GitHub's 403 for an exceeded primary
// or secondary rate limit. DoJSON does not expose the x-ratelimit-remaining
// header, so this relies on GitHub's documented message ("API rate limit
// exceeded ...", "You have exceeded a secondary rate limit ...").
func rateLimited(err error) bool {
	var se *identity.HTTPStatusError
	return errors.As(err, &se) && se.Status == http.StatusForbidden &&
		strings.Contains(strings.ToLower(se.Body), "rate limit")
}

// upstream wraps a failure that says nothing about the token: GitHub is
// failing, rate limiting us, or answering in a way we do not understand.
// The caller should retry with the same token, so it wraps
// [identity.ErrUnavailable]. A status error's body is left out: it is
// GitHub's text, which Gatehouse does not control.
func upstream(what string, err error) error {
	var se *identity.HTTPStatusError
	switch {
	case errors.Is(err, identity.ErrUnavailable):
		return fmt.Errorf("github: %s: %w", what, err)
	case rateLimited(err):
		return fmt.Errorf("%w: github: %s: GitHub rate limit exceeded (403)", identity.ErrUnavailable, what)
	case errors.As(err, &se):
		return fmt.Errorf("%w: github: %s: unexpected answer %d", identity.ErrUnavailable, what, se.Status)
	default:
		return fmt.Errorf("%w: github: %s: %w", identity.ErrUnavailable, what, err)
	}
}
