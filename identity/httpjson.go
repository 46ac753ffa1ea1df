package identity

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// MaxResponseBytes bounds what Gatehouse reads from an identity provider.
const MaxResponseBytes = 1 << 20

// DefaultHTTPClient is used for identity-provider calls when a provider's
// config names none: bounded in time, no cookies.
var DefaultHTTPClient = &http.Client{Timeout: 10 * time.Second}

// HTTPStatusError is a provider's answer with an unexpected status (other
// than 5xx and 429, which are [ErrUnavailable]). Body is a prefix of the
// response for logs; never show it to callers.
type HTTPStatusError struct {
	Status int
	Body   string
}

func (e *HTTPStatusError) Error() string {
	return fmt.Sprintf("identity provider answered %d: %s", e.Status, e.Body)
}

// DoJSON sends req and decodes a 2xx JSON answer into v (if not nil).
// Network failures, 5xx and 429 answers wrap [ErrUnavailable]; other
// statuses return an [*HTTPStatusError].
func DoJSON(client *http.Client, req *http.Request, v any) error {
	if client == nil {
		client = DefaultHTTPClient
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json")
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "gatehouse")
	}
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %s %s: %w", ErrUnavailable, req.Method, where(req), err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, MaxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("%w: reading %s: %w", ErrUnavailable, where(req), err)
	}
	if len(body) > MaxResponseBytes {
		return fmt.Errorf("%s: response larger than %d bytes", where(req), MaxResponseBytes)
	}
	switch {
	case res.StatusCode >= 500 || res.StatusCode == http.StatusTooManyRequests:
		return fmt.Errorf("%w: %s answered %d", ErrUnavailable, where(req), res.StatusCode)
	case res.StatusCode < 200 || res.StatusCode > 299:
		return &HTTPStatusError{Status: res.StatusCode, Body: string(body[:min(len(body), 200)])}
	}
	if v == nil {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decoding %s: %w", where(req), err)
	}
	return nil
}

// StatusIs reports whether err is an [*HTTPStatusError] with one of codes.
func StatusIs(err error, codes ...int) bool {
	var se *HTTPStatusError
	if !errors.As(err, &se) {
		return false
	}
	for _, c := range codes {
		if se.Status == c {
			return true
		}
	}
	return false
}

// where names a request's endpoint for errors: scheme, host and path only
// (a query string may carry a credential).
func where(req *http.Request) string {
	return req.URL.Scheme + "://" + req.URL.Host + req.URL.Path
}
