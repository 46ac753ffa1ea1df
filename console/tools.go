package console

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
)

// toolError is how Tools reports a refusal or failure meant for the
// person (mcp.ToolError).
type toolError interface {
	error
	Denied() bool
	RetryAfter() time.Duration
}

// invoke calls tool as the visitor (through Tools: the tool's own role ×
// scope rule, tenant transaction and audit record) and decodes its result
// into out. A refusal is a 403 page; a failure meant for the person comes
// back as *actionError for the page to show; anything else is a 503.
func (c *Console) invoke(ctx echo.Context, tool string, args, out any) error {
	v := visitorOf(ctx)
	if args == nil {
		args = struct{}{}
	}
	raw, err := c.opts.Tools.Invoke(ctx.Request().Context(), v.p, v.m, v.origin, tool, args)
	var te toolError
	switch {
	case errors.As(err, &te) && te.Denied():
		return echo.NewHTTPError(http.StatusForbidden, te.Error())
	case errors.As(err, &te) && te.RetryAfter() > 0:
		ctx.Response().Header().Set("Retry-After", strconv.Itoa(int(te.RetryAfter().Seconds())))
		return echo.NewHTTPError(http.StatusTooManyRequests, te.Error())
	case errors.As(err, &te):
		return &actionError{te.Error()}
	case err != nil:
		return c.unavailable(ctx, "calling "+tool, err)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(raw, out)
}

// actionError is a failed action's explanation, shown on the page.
type actionError struct{ msg string }

func (e *actionError) Error() string { return e.msg }

// shown splits an invoke error into a message for the page (nil err:
// none) and an error to return.
func shown(err error) (string, error) {
	var ae *actionError
	if errors.As(err, &ae) {
		return ae.msg, nil
	}
	return "", err
}

// Results of the tools the console calls (their JSON, as the tools'
// output schemas say).

type keyOut struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	Role      string   `json:"role"`
	Scopes    []string `json:"scopes"`
	CreatedBy string   `json:"created_by"`
	CreatedAt string   `json:"created_at"`
	ExpiresAt string   `json:"expires_at"`
	LastUsed  string   `json:"last_used_at"`
	RevokedAt string   `json:"revoked_at"`
	// AllowedNetworks: where the key may be used from; empty: anywhere.
	AllowedNetworks []string `json:"allowed_networks"`
}

type keysOut struct {
	Keys []keyOut `json:"keys"`
}

type createdKey struct {
	Key    keyOut `json:"key"`
	Secret string `json:"secret"`
}

type memberOut struct {
	ID         string   `json:"id"`
	Email      string   `json:"email"`
	Name       string   `json:"name"`
	Role       string   `json:"role"`
	Identities []string `json:"identities"`
	Since      string   `json:"since"`
	RemovedAt  string   `json:"removed_at"`
	LastSeen   string   `json:"last_seen"`
}

type membersOut struct {
	Members []memberOut `json:"members"`
}
