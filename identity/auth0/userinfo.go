package auth0

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

const (
	// emptyProfileTTL bounds how long an answer without an email is reused:
	// a later token of the same user granted the email scope should not wait
	// the full TTL to show it.
	emptyProfileTTL = time.Minute
	// maxProfiles bounds the cache; beyond it expired entries are swept, then
	// arbitrary ones dropped.
	maxProfiles = 100_000
	// fetchTimeout bounds one /userinfo call shared by concurrent callers.
	fetchTimeout = 10 * time.Second
)

// Reasons given to callers (safe to show: they never contain the token).
const (
	reasonRejected    = "Auth0 did not accept the access token"
	reasonUserChanged = "the Auth0 access token's user could not be confirmed"
)

// userInfo is the part of Auth0's /userinfo answer Gatehouse reads.
type userInfo struct {
	Sub           string `json:"sub"`
	Email         string `json:"email"`
	EmailVerified any    `json:"email_verified"` // documented as a boolean; "true" tolerated
	Name          string `json:"name"`
}

// profile is what Gatehouse keeps of a subject's /userinfo answer.
type profile struct {
	email         string
	emailVerified bool
	name          string
}

type cachedProfile struct {
	p       *profile
	expires time.Time
}

// userInfoClient reads /userinfo, at most once per subject per TTL: Auth0
// rate-limits the endpoint per user, and every token of a user shares the
// answer. Concurrent first lookups of one subject make one call.
type userInfoClient struct {
	url    string
	client *http.Client
	ttl    time.Duration
	now    func() time.Time
	group  singleflight.Group

	mu    sync.Mutex
	cache map[string]cachedProfile
}

func newUserInfoClient(url string, client *http.Client, ttl time.Duration) *userInfoClient {
	return &userInfoClient{url: url, client: client, ttl: ttl, now: time.Now, cache: map[string]cachedProfile{}}
}

// lookup returns subject sub's profile, asking Auth0 with token (which must
// be a verified token of sub) when none is cached. It returns nil, nil when
// the token may not read the profile.
func (u *userInfoClient) lookup(ctx context.Context, sub, token string) (*profile, error) {
	if p, ok := u.cached(sub); ok {
		return p, nil
	}
	v, err, _ := u.group.Do(sub, func() (any, error) {
		if p, ok := u.cached(sub); ok {
			return p, nil // stored while this caller waited
		}
		// One call serves every caller waiting on this subject: one caller
		// going away must not fail the others.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
		defer cancel()
		p, err := u.fetch(fctx, sub, token)
		if err == nil && p != nil {
			u.store(sub, p)
		}
		return p, err
	})
	if err != nil {
		return nil, err
	}
	return v.(*profile), nil
}

// fetch calls GET /userinfo with the token as Bearer.
func (u *userInfoClient) fetch(ctx context.Context, sub, token string) (*profile, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.url, nil)
	if err != nil {
		return nil, fmt.Errorf("auth0: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	var ui userInfo
	err = identity.DoJSON(u.client, req, &ui)
	switch {
	case err == nil:
	case identity.StatusIs(err, http.StatusUnauthorized):
		return nil, identity.Invalid(reasonRejected)
	case identity.StatusIs(err, http.StatusForbidden):
		return nil, nil // insufficient scope: no profile, not cached
	default:
		return nil, upstream("reading the user's profile", err)
	}
	if ui.Sub != sub {
		return nil, identity.Invalid(reasonUserChanged)
	}
	return &profile{email: ui.Email, emailVerified: truthy(ui.EmailVerified), name: ui.Name}, nil
}

func (u *userInfoClient) cached(sub string) (*profile, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	e, ok := u.cache[sub]
	if !ok || !u.now().Before(e.expires) {
		return nil, false
	}
	return e.p, true
}

func (u *userInfoClient) store(sub string, p *profile) {
	ttl := u.ttl
	if p.email == "" {
		ttl = min(ttl, emptyProfileTTL)
	}
	now := u.now()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.cache) >= maxProfiles {
		u.sweep(now)
	}
	u.cache[sub] = cachedProfile{p: p, expires: now.Add(ttl)}
}

// sweep drops expired entries, then arbitrary ones until there is room.
// The caller holds u.mu.
func (u *userInfoClient) sweep(now time.Time) {
	for sub, e := range u.cache {
		if !now.Before(e.expires) {
			delete(u.cache, sub)
		}
	}
	for sub := range u.cache {
		if len(u.cache) < maxProfiles {
			return
		}
		delete(u.cache, sub)
	}
}

// upstream wraps a failure that says nothing about the token: Auth0 is
// failing, rate limiting us (429), or answering in a way we do not
// understand. A status error's body is left out: it is Auth0's text.
func upstream(what string, err error) error {
	var se *identity.HTTPStatusError
	switch {
	case errors.Is(err, identity.ErrUnavailable):
		return fmt.Errorf("auth0: %s: %w", what, err)
	case errors.As(err, &se):
		return fmt.Errorf("%w: auth0: %s: unexpected answer %d", identity.ErrUnavailable, what, se.Status)
	default:
		return fmt.Errorf("%w: auth0: %s: %w", identity.ErrUnavailable, what, err)
	}
}

// truthy reads a boolean that may be sent as a string.
func truthy(v any) bool {
	switch b := v.(type) {
	case bool:
		return b
	case string:
		return strings.EqualFold(b, "true")
	}
	return false
}
