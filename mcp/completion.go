package mcp

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/store"
)

// complete answers completion/complete (MCP specification, server
// utilities, completion). For a prompt's argument that has suggestions
// (project names, tags) it reads them from the caller's tenant, like
// prompts/get: the caller must be allowed the prompt, the read is a
// read-only one in the caller's tenant, and the decision is audited
// as "completion/complete:NAME". Other arguments, and resource templates'
// (document ids are not typed by people), get no suggestions.
//
// Errors (JSON-RPC, as the specification lists them): -32602 for an
// unknown prompt or argument, or a value that breaks the argument's rules;
// an ACCESS DENIED (-32600) when the caller may not get the prompt.
func (s *Server) complete(ctx context.Context, req *sdk.CompleteRequest) (*sdk.CompleteResult, error) {
	none := &sdk.CompleteResult{Completion: sdk.CompletionResultDetails{Values: []string{}}}
	ref := req.Params.Ref
	if ref.Type != "ref/prompt" {
		return none, nil
	}
	p := s.prompts[ref.Name]
	if p == nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("unknown prompt %q", truncate(strings.ToValidUTF8(ref.Name, "?"), 64))}
	}
	name, typed := req.Params.Argument.Name, req.Params.Argument.Value
	raw, _ := json.Marshal(req.Params.Argument)
	a := p.arg(name)
	var found store.Suggestions
	check := func() error {
		if a == nil {
			return invalidArgs(fmt.Sprintf("unknown argument %q: the prompt %s takes %s", truncate(strings.ToValidUTF8(name, "?"), 64), p.Name, p.argList()))
		}
		return a.check(strings.TrimSpace(typed))
	}
	var run func(context.Context, *Call) error // nil: nothing to read
	if a != nil && a.complete != nil {
		run = func(ctx context.Context, c *Call) (err error) {
			found, err = a.complete(ctx, c.Tx, strings.TrimSpace(typed), store.MaxSuggestions)
			return err
		}
	}
	if err := s.promptRequest(ctx, req.Extra, "completion/complete", p, raw, check, run); err != nil {
		return nil, err
	}
	if found.Values == nil {
		return none, nil
	}
	return &sdk.CompleteResult{Completion: sdk.CompletionResultDetails{Values: found.Values, HasMore: found.More}}, nil
}
