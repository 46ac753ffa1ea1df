package google

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// Reasons given to callers (safe to show: they never contain the token).
const (
	reasonMalformed   = "the Google access token is malformed"
	reasonNotValid    = "the Google access token is not valid (expired or revoked)"
	reasonOtherApp    = "the Google access token was issued to another application"
	reasonNoUser      = "the Google access token does not identify a user (it was granted without the openid, email or profile scope)"
	reasonUserChanged = "the Google access token's user could not be confirmed"
)

// tokenInfo is the part of Google's tokeninfo answer Gatehouse reads. Google
// sends exp and expires_in as strings of decimal seconds; numbers are
// accepted too.
type tokenInfo struct {
	Aud       string `json:"aud"`
	Azp       string `json:"azp"`
	Sub       string `json:"sub"`
	Scope     string `json:"scope"` // space-separated
	Exp       any    `json:"exp"`   // unix seconds
	ExpiresIn any    `json:"expires_in"`
}

// userInfo is the part of Google's OpenID Connect userinfo answer Gatehouse
// reads. hd is present only for Google Workspace accounts.
type userInfo struct {
	Sub           string `json:"sub"`
	Email         string `json:"email"`
	EmailVerified any    `json:"email_verified"` // true; "true" tolerated
	Name          string `json:"name"`
	HD            string `json:"hd"`
}

// accessVerifier checks opaque Google access tokens.
type accessVerifier struct {
	clientID                  string
	tokenInfoURL, userInfoURL string
	client                    *http.Client
	now                       func() time.Time
}

var _ identity.Verifier = (*accessVerifier)(nil)

// Verify implements [identity.Verifier]: tokeninfo proves the token is live
// and was issued to our client; userinfo then tells who holds it.
func (v *accessVerifier) Verify(ctx context.Context, token string) (*identity.Principal, error) {
	if malformed(token) {
		return nil, identity.Invalid(reasonMalformed)
	}
	ti, err := v.tokenInfo(ctx, token)
	if err != nil {
		return nil, err
	}
	expiry, err := v.check(ti)
	if err != nil {
		return nil, err
	}
	p := &identity.Principal{
		Provider: "google",
		Subject:  "google:" + ti.Sub,
		Scopes:   strings.Fields(ti.Scope),
		Expiry:   expiry,
	}
	ui, err := v.userInfo(ctx, token)
	switch {
	case err != nil:
		return nil, err
	case ui == nil:
		return p, nil // the token may not read the profile: no email
	case ui.Sub != ti.Sub:
		return nil, identity.Invalid(reasonUserChanged)
	}
	p.Email, p.EmailVerified, p.Name = ui.Email, truthy(ui.EmailVerified), ui.Name
	p.Claims = hostedDomain(ui.HD)
	return p, nil
}

// tokenInfo asks Google about the token: POST with the token in a form
// body, so that it never sits in a URL (or a log of one).
func (v *accessVerifier) tokenInfo(ctx context.Context, token string) (*tokenInfo, error) {
	body := url.Values{"access_token": {token}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.tokenInfoURL, strings.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("google: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var ti tokenInfo
	err = identity.DoJSON(v.client, req, &ti)
	switch {
	case err == nil:
		return &ti, nil
	case identity.StatusIs(err, http.StatusBadRequest, http.StatusUnauthorized):
		// Google answers 400 {"error": "invalid_token", ...} for an
		// expired, revoked or unknown token.
		return nil, identity.Invalid(reasonNotValid)
	default:
		return nil, upstream("checking the access token", err)
	}
}

// check pins the token to our client and returns its expiry.
func (v *accessVerifier) check(ti *tokenInfo) (time.Time, error) {
	if ti.Aud != v.clientID || (ti.Azp != "" && ti.Azp != v.clientID) {
		return time.Time{}, identity.Invalid(reasonOtherApp)
	}
	if ti.Sub == "" {
		return time.Time{}, identity.Invalid(reasonNoUser)
	}
	now := v.now()
	var expiry time.Time
	if exp, ok := seconds(ti.Exp); ok {
		expiry = time.Unix(exp, 0)
	} else if in, ok := seconds(ti.ExpiresIn); ok {
		expiry = now.Add(time.Duration(in) * time.Second)
	} else {
		return time.Time{}, fmt.Errorf("%w: google: tokeninfo answered without an expiry", identity.ErrUnavailable)
	}
	if !expiry.After(now) {
		return time.Time{}, identity.Invalid(reasonNotValid)
	}
	return expiry, nil
}

// userInfo reads the token's user (GET with the token as Bearer), or nil
// when the token may not read it (granted without openid, email or profile).
func (v *accessVerifier) userInfo(ctx context.Context, token string) (*userInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.userInfoURL, nil)
	if err != nil {
		return nil, fmt.Errorf("google: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	var ui userInfo
	err = identity.DoJSON(v.client, req, &ui)
	switch {
	case err == nil:
		return &ui, nil
	case identity.StatusIs(err, http.StatusUnauthorized, http.StatusForbidden):
		return nil, nil
	default:
		return nil, upstream("reading the user's profile", err)
	}
}

// upstream wraps a failure that says nothing about the token: Google is
// failing or answering in a way we do not understand, so the caller should
// retry with the same token. A status error's body is left out: it is
// Google's text, which Gatehouse does not control.
func upstream(what string, err error) error {
	var se *identity.HTTPStatusError
	switch {
	case errors.Is(err, identity.ErrUnavailable):
		return fmt.Errorf("google: %s: %w", what, err)
	case errors.As(err, &se):
		return fmt.Errorf("%w: google: %s: unexpected answer %d", identity.ErrUnavailable, what, se.Status)
	default:
		return fmt.Errorf("%w: google: %s: %w", identity.ErrUnavailable, what, err)
	}
}

// malformed reports whether token cannot be an access token: empty, too
// long, or holding anything but printable ASCII.
func malformed(token string) bool {
	if token == "" || len(token) > identity.MaxTokenBytes {
		return true
	}
	for i := range len(token) {
		if token[i] <= ' ' || token[i] > '~' {
			return true
		}
	}
	return false
}

// seconds reads a count of seconds sent as a decimal string or a number.
func seconds(v any) (int64, bool) {
	switch n := v.(type) {
	case string:
		s, err := strconv.ParseInt(n, 10, 64)
		return s, err == nil
	case float64:
		return int64(n), true
	}
	return 0, false
}

// truthy reads a boolean that Google may send as a string.
func truthy(v any) bool {
	switch b := v.(type) {
	case bool:
		return b
	case string:
		return strings.EqualFold(b, "true")
	}
	return false
}
