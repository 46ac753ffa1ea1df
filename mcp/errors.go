package mcp

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// This file is the one place where Go errors become wire answers: HTTP
// statuses and OAuth error bodies for the request, tool error results for
// a tool call. Nothing internal crosses: unexpected errors are logged with
// the request id and answered with that id only.

// userError is a tool failure whose message is meant for the caller (and
// the model) verbatim.
type userError struct{ msg string }

func (e *userError) Error() string { return e.msg }

func userErrorf(format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...)}
}

// ruleRefusal is a tool call the rules refuse (for example removing an
// organisation's last admin): the caller reads msg, and the call is audited
// as DENIED with msg as its reason, not as a failure.
type ruleRefusal struct{ msg string }

func (e *ruleRefusal) Error() string { return e.msg }

func refusef(format string, args ...any) error {
	return &ruleRefusal{msg: fmt.Sprintf(format, args...)}
}

// notFound reports an object missing from the caller's tenant.
func notFound(what, id string) error {
	return fmt.Errorf("%w: %w", &userError{msg: fmt.Sprintf("%s %q not found", what, id)}, store.ErrNotFound)
}

// errInsufficientScope: the credential lacks a scope the whole request needs.
var errInsufficientScope = errors.New("insufficient scope")

// authAnswer is the HTTP answer to a request whose caller could not be
// established.
type authAnswer struct {
	status      int
	code        string // OAuth error code: invalid_token, access_denied, temporarily_unavailable, server_error
	description string
}

func authFailure(err error) authAnswer {
	switch {
	case errors.Is(err, identity.ErrInvalidToken):
		return authAnswer{http.StatusUnauthorized, "invalid_token", identity.Reason(err)}
	case errors.Is(err, tenancy.ErrTenantNotFound):
		return authAnswer{http.StatusUnauthorized, "invalid_token", "the credential's tenant no longer exists"}
	case errors.Is(err, identity.ErrUnavailable):
		return authAnswer{http.StatusServiceUnavailable, "temporarily_unavailable", "the identity provider cannot be reached; retry shortly"}
	case errors.Is(err, tenancy.ErrSuspended):
		return authAnswer{http.StatusForbidden, "access_denied", "this organisation's access to Gatehouse is suspended"}
	case errors.Is(err, errInsufficientScope):
		return authAnswer{http.StatusForbidden, "insufficient_scope", "the token does not carry the scope " + identity.ScopeRead + ", which every request to this server needs"}
	case errors.Is(err, tenancy.ErrRemoved):
		return authAnswer{http.StatusForbidden, "access_denied", "an admin of your organisation removed you from it on this server; ask them to restore you"}
	case errors.Is(err, tenancy.ErrSignupRefused):
		return authAnswer{http.StatusForbidden, "access_denied", "your organisation is not registered on this server and sign-up is restricted; ask the server's operator to admit it"}
	case errors.Is(err, tenancy.ErrNoTenant):
		return authAnswer{http.StatusForbidden, "access_denied", "you do not belong to an organisation on this server"}
	}
	return authAnswer{http.StatusInternalServerError, "server_error", "internal error"}
}

// outcomeInvalidArgs is the outcome (metrics, audit) of a call refused for
// its arguments.
const outcomeInvalidArgs = "invalid_arguments"

// toolFailure turns a tool's error into a result the model can read.
// internal reports whether err was unexpected (and must be logged).
// Refusals of the caller's input (invalid arguments, objects not found,
// other user errors) are outcomes the audit records as DENIED with their
// message as the reason (see refusedByInput); only failures of the server
// (timeouts, cancellations, internal errors) are audited as ERROR.
func toolFailure(requestID string, err error) (res *sdk.CallToolResult, outcome string, internal bool) {
	var ue *userError
	var rf *ruleRefusal
	var busy *store.BusyError
	switch {
	case errors.As(err, &rf):
		return errorResult(rf.msg), "denied", false
	case errors.Is(err, errInvalidArgs):
		return errorResult(err.Error()), outcomeInvalidArgs, false
	case errors.As(err, &ue):
		if errors.Is(err, store.ErrNotFound) {
			return errorResult(ue.msg), "not_found", false
		}
		return errorResult(ue.msg), "error", false
	case store.Unavailable(err):
		return errorResult(databaseOutage(err).message()), "unavailable", false
	case errors.As(err, &busy):
		return errorResult(fmt.Sprintf("busy: %s are all in use (%d); retry in a moment", busy.What, busy.Limit)), "busy", false
	case errors.Is(err, context.DeadlineExceeded):
		return errorResult("the tool call timed out; try again"), "timeout", false
	case errors.Is(err, context.Canceled):
		return errorResult("the tool call was cancelled"), "cancelled", false
	}
	return errorResult("internal error (request id " + requestID + "); the operator can find the details in the server log"), "internal_error", true
}

// refusedByInput reports whether an outcome of toolFailure refuses the
// caller's input rather than reports a failure of the server.
func refusedByInput(outcome string) bool {
	return outcome == outcomeInvalidArgs || outcome == "not_found" || outcome == "error"
}

// argRefusal is an invalid-arguments error with its own wording (the
// query tool's refusals of the caller's statement).
type argRefusal struct{ msg string }

func (e *argRefusal) Error() string        { return e.msg }
func (e *argRefusal) Is(target error) bool { return target == errInvalidArgs }

// errorText is the message of an errorResult.
func errorText(res *sdk.CallToolResult) string {
	if res != nil && len(res.Content) == 1 {
		if t, ok := res.Content[0].(*sdk.TextContent); ok {
			return t.Text
		}
	}
	return ""
}

func errorResult(msg string) *sdk.CallToolResult {
	return &sdk.CallToolResult{IsError: true, Content: []sdk.Content{&sdk.TextContent{Text: msg}}}
}
