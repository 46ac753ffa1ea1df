package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// MCP prompts (specification, server features, prompts) pass the same
// steps as a tool call: the caller is authenticated, placed in a tenant and
// rate-limited by the HTTP middleware (admitted like tools/call); then each
// prompt's minimum role and scope decide (compiled in, overridable in the
// policy file under "prompts:"), prompts/list shows only the prompts the
// caller may get (or step up to, as for tools), and prompts/get renders
// with the caller's tenant's data read as a read tool reads it
// (store.DB.InTenantReadOnly: every statement as the tenant's role, in its
// schema, read-only), its decision audited like a read tool's
// (group-committed) as "prompts/get:NAME". Completion of their arguments
// (completion/complete) is decided and audited the same way, as
// "completion/complete:NAME". Prompts never change anything: the text they
// render tells the model which tools to call, and those tools check the
// caller again.

// Prompt is one registered prompt: its MCP definition, who may get it, its
// arguments and its renderer. Build prompts with [newPrompt].
type Prompt struct {
	Name  string
	Role  tenancy.Role // minimum member role
	Scope string       // scope the credential must carry

	def    *sdk.Prompt
	args   []*promptArg
	render func(ctx context.Context, c *Call, args promptArgs) (*sdk.GetPromptResult, error)
}

// promptArg is one argument of a prompt. Values are text; maxLen bounds
// them in characters; lines admits line breaks and tabs (prose, such as a
// description; names, projects and tags take no control character);
// complete, when set, suggests values for a partial one from the caller's
// tenant.
type promptArg struct {
	name, description string
	required          bool
	maxLen            int
	lines             bool
	complete          func(ctx context.Context, tx pgx.Tx, typed string, limit int) (store.Suggestions, error)
}

// promptArgs are a prompt's validated arguments: trimmed, "" when absent.
type promptArgs map[string]string

// PromptSpec describes a prompt for [newPrompt].
type PromptSpec struct {
	Name, Title, Description string
	Role                     tenancy.Role
	Scope                    string
	Args                     []*promptArg
}

// newPrompt builds a Prompt. render gets the validated arguments and a
// Call whose Tx reads the caller's tenant read-only (statements run as
// the tenant's role in its schema; see store.DB.InTenantReadOnly); an
// error wrapping errInvalidArgs becomes -32602 with its message, other
// errors are worded as tool failures are (toolFailure).
func newPrompt(spec PromptSpec, render func(ctx context.Context, c *Call, args promptArgs) (*sdk.GetPromptResult, error)) *Prompt {
	def := &sdk.Prompt{Name: spec.Name, Title: spec.Title, Description: spec.Description}
	for _, a := range spec.Args {
		def.Arguments = append(def.Arguments, &sdk.PromptArgument{Name: a.name, Description: a.description, Required: a.required})
	}
	return &Prompt{Name: spec.Name, Role: spec.Role, Scope: spec.Scope, def: def, args: spec.Args, render: render}
}

// promptPolicyPrefix marks a prompt's entry in a ToolPolicy: the policy
// file's prompts.NAME is ToolPolicy["prompts/NAME"] (tool names have no
// slash, so the two never meet).
const promptPolicyPrefix = "prompts/"

// PromptNames lists every prompt Gatehouse serves, with its compiled-in rule.
func PromptNames() map[string]ToolRule {
	out := map[string]ToolRule{}
	for _, p := range prompts() {
		out[p.Name] = ToolRule{Role: p.Role, Scope: p.Scope}
	}
	return out
}

// allows reports whether the caller's role and credential scopes both
// permit the prompt.
func (p *Prompt) allows(c *Caller) bool {
	return c.Role.Allows(p.Role) && c.Principal.HasScope(p.Scope)
}

// visible reports whether prompts/list shows p to c: as for tools
// (Tool.visible), when c may get it, and also when only the scope falls
// short of a token from an OAuth sign-in, whose client can re-authorize
// (prompts/get then answers HTTP 403 insufficient_scope, see stepUp).
func (p *Prompt) visible(c *Caller) bool {
	return p.allows(c) || (c.Role.Allows(p.Role) && authserver.SignedIn(c.Principal))
}

func (p *Prompt) arg(name string) *promptArg {
	for _, a := range p.args {
		if a.name == name {
			return a
		}
	}
	return nil
}

// registerPrompts adds every prompt, with the policy's overrides, and the
// prompts/list filter; an override naming no prompt is an error.
func (s *Server) registerPrompts(policy ToolPolicy) error {
	s.prompts = map[string]*Prompt{}
	for _, p := range prompts() {
		if rule, ok := policy[promptPolicyPrefix+p.Name]; ok {
			p.Role, p.Scope = rule.Role, rule.Scope
		}
		s.prompts[p.Name] = p
		s.sdk.AddPrompt(p.def, s.getPrompt(p))
	}
	for key := range policy {
		if name, ok := strings.CutPrefix(key, promptPolicyPrefix); ok && s.prompts[name] == nil {
			return fmt.Errorf("mcp: prompt policy names unknown prompt %q", name)
		}
	}
	s.sdk.AddReceivingMiddleware(s.filterPrompts)
	return nil
}

// filterPrompts is receiving middleware: prompts/list shows each caller
// only the prompts it may get (or step up to, see Prompt.visible), and
// marks the answer private to the caller.
// prompts/get checks again on its own.
func (s *Server) filterPrompts(next sdk.MethodHandler) sdk.MethodHandler {
	return func(ctx context.Context, method string, req sdk.Request) (sdk.Result, error) {
		res, err := next(ctx, method, req)
		list, ok := res.(*sdk.ListPromptsResult)
		if err != nil || !ok {
			return res, err
		}
		c, cerr := s.callerOf(ctx, req.GetExtra())
		visible := make([]*sdk.Prompt, 0, len(list.Prompts))
		for _, def := range list.Prompts {
			if p := s.prompts[def.Name]; p != nil && cerr == nil && p.visible(c) {
				visible = append(visible, def)
			}
		}
		filtered := *list
		filtered.Prompts = visible
		filtered.Cacheable = privateAnswer
		return &filtered, nil
	}
}

// getPrompt answers prompts/get for p: authorized, arguments validated,
// rendered in the caller's tenant, audited.
func (s *Server) getPrompt(p *Prompt) sdk.PromptHandler {
	return func(ctx context.Context, req *sdk.GetPromptRequest) (*sdk.GetPromptResult, error) {
		var res *sdk.GetPromptResult
		var args promptArgs
		raw, _ := json.Marshal(req.Params.Arguments) // map keys sorted: a stable digest
		err := s.promptRequest(ctx, req.Extra, "prompts/get", p, raw,
			func() (err error) { args, err = p.validate(req.Params.Arguments); return err },
			func(ctx context.Context, c *Call) (err error) { res, err = p.render(ctx, c, args); return err })
		if err != nil {
			return nil, err
		}
		return res, nil
	}
}

// promptRequest runs one request about prompt p for the caller of extra
// like a read tool call (Server.call): refused unless p.allows the caller;
// check (arguments, no database) first; then run, when not nil, in a READ
// ONLY transaction of the caller's tenant within the tool time limit. The
// decision is audited as method:NAME, group-committed when the request
// succeeded or was refused by role or scope, else in a fresh transaction.
// The error returned is ready for the wire (a *jsonrpc.Error).
func (s *Server) promptRequest(ctx context.Context, extra *sdk.RequestExtra, method string, p *Prompt, raw []byte,
	check func() error, run func(context.Context, *Call) error) error {
	c, err := s.callerOf(ctx, extra)
	if err != nil {
		return err
	}
	if extra == nil || extra.TokenInfo == nil {
		if err := s.limitStdio(ctx, c, method); err != nil {
			return err
		}
	}
	rec := s.audit.base(c, method+":"+p.Name, raw)
	outcome := "ok"
	switch {
	case !p.allows(c):
		rec.Decision, rec.Reason = store.Denied, fmt.Sprintf("needs role %s and scope %s; has role %s", p.Role, p.Scope, c.Role)
		outcome = "denied"
		err = s.commitAudit(c, rec)
	default:
		if err = check(); err == nil && run != nil {
			err = s.db.InTenantReadOnly(ctx, c.Tenant, func(ctx context.Context, tx pgx.Tx) error {
				tctx, cancel := context.WithTimeout(ctx, s.opts.ToolTimeout)
				defer cancel()
				return run(tctx, &Call{Caller: c, Tx: tx, cursors: s.cursorKey, srv: s})
			})
		}
		if err == nil {
			rec.Decision = store.Allowed
			err = s.commitAudit(c, rec)
		}
	}
	var msg string
	if err != nil {
		outcome, msg = s.promptFailure(ctx, c, rec, err)
	}
	s.audit.written(c.Tenant, rec)
	s.metrics.prompts.WithLabelValues(method, p.Name, outcome).Inc()
	switch {
	case err == nil && outcome == "denied":
		return &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: promptDenial(p, c)}
	case err == nil:
		return nil
	case outcome == "unavailable":
		return s.reportOutage(c, databaseOutage(err))
	case outcome == "busy":
		var busy *store.BusyError
		errors.As(err, &busy)
		return s.reportOutage(c, outage{busy: busy})
	case refusedByInput(outcome):
		return &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: msg}
	}
	return &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: msg}
}

// promptFailure records a prompt request that failed (in a fresh
// transaction: the group commit may be what failed) and says its outcome
// and the message for the caller, as toolFailure words them.
func (s *Server) promptFailure(ctx context.Context, c *Caller, rec *store.AuditRecord, err error) (outcome, msg string) {
	res, outcome, internal := toolFailure(c.RequestID, err)
	msg = errorText(res)
	if internal {
		s.log.Error("prompt request failed", "what", rec.Tool, "request_id", c.RequestID, "tenant", c.Tenant.Key, "subject", c.Principal.Subject, "error", err)
	}
	rec.Decision, rec.Reason = store.Failed, outcome
	if refusedByInput(outcome) {
		rec.Decision, rec.Reason = store.Denied, msg
	}
	defer s.awayFromGroupCommit(c)() // not through the group commit
	s.recordAlone(ctx, c, rec)
	return outcome, msg
}

// promptDenial is the message of a refused prompt request: what is needed
// and what the caller has, nothing else.
func promptDenial(p *Prompt, c *Caller) string {
	var missing []string
	if !c.Role.Allows(p.Role) {
		missing = append(missing, fmt.Sprintf("role %s or higher (your role is %s)", p.Role, c.Role))
	}
	if !c.Principal.HasScope(p.Scope) {
		missing = append(missing, fmt.Sprintf("scope %s (your credential has %s)", p.Scope, strings.Join(c.Principal.Scopes, " ")))
	}
	return fmt.Sprintf("ACCESS DENIED: the prompt %s needs %s. Ask an admin of %s for access.", p.Name, strings.Join(missing, " and "), c.Tenant.Key)
}

// validate checks prompts/get arguments: only the prompt's own, the
// required ones present and not blank, every value within its length and
// free of control characters (PostgreSQL text cannot hold NUL; the others
// have no place in a name or a tag; prose arguments may hold line breaks
// and tabs). Values are trimmed; an optional
// argument sent empty counts as absent (some clients send every argument).
// Errors wrap errInvalidArgs and name the argument (-32602 on the wire, as
// the specification asks for missing arguments).
func (p *Prompt) validate(in map[string]string) (promptArgs, error) {
	names := make([]string, 0, len(in))
	for name := range in {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if p.arg(name) == nil {
			return nil, invalidArgs(fmt.Sprintf("unknown argument %q: the prompt %s takes %s", truncate(strings.ToValidUTF8(name, "?"), 64), p.Name, p.argList()))
		}
	}
	out := promptArgs{}
	for _, a := range p.args {
		v := strings.TrimSpace(in[a.name])
		if err := a.check(v); err != nil {
			return nil, err
		}
		if v == "" && a.required {
			return nil, invalidArgs(fmt.Sprintf("argument %q is required: %s", a.name, a.description))
		}
		out[a.name] = v
	}
	return out, nil
}

// check refuses a value that is too long, not UTF-8 or holds a control
// character (other than line breaks and tabs in a lines argument), naming
// the argument.
func (a *promptArg) check(v string) error {
	if !utf8.ValidString(v) {
		return invalidArgs(fmt.Sprintf("argument %q is not valid UTF-8", a.name))
	}
	if n := utf8.RuneCountInString(v); n > a.maxLen {
		return invalidArgs(fmt.Sprintf("argument %q has %d characters; the limit is %d", a.name, n, a.maxLen))
	}
	if i := strings.IndexFunc(v, func(r rune) bool {
		return unicode.IsControl(r) && !(a.lines && (r == '\n' || r == '\r' || r == '\t'))
	}); i >= 0 {
		r, _ := utf8.DecodeRuneInString(v[i:])
		return invalidArgs(fmt.Sprintf("argument %q contains the control character U+%04X", a.name, r))
	}
	return nil
}

func (p *Prompt) argList() string {
	if len(p.args) == 0 {
		return "no arguments"
	}
	names := make([]string, len(p.args))
	for i, a := range p.args {
		names[i] = a.name
	}
	return strings.Join(names, ", ")
}
