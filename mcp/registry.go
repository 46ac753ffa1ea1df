package mcp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/jackc/pgx/v5"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// Tool is one registered tool: its MCP definition, who may call it, and its
// handler. Build tools with [newTool].
type Tool struct {
	Name  string
	Role  tenancy.Role // minimum member role
	Scope string       // scope the credential must carry
	// ownConn: the tool opens its own database connection and runs
	// outside a tenant transaction (Call.Tx is nil); its audit record is
	// written after it, in a transaction of its own.
	ownConn bool
	// readOnly: the tool only reads (ToolSpec.ReadOnly); it runs in a
	// READ ONLY transaction and its audit record is group-committed.
	readOnly bool
	// noTenantData: the tool reads nothing from the database (whoami); it
	// opens no transaction (Call.Tx is nil) and its audit record is
	// group-committed.
	noTenantData bool
	// readsAudit: the tool reads the tenant's audit log (ToolSpec.ReadsAudit).
	readsAudit bool

	def    *sdk.Tool
	input  *jsonschema.Resolved
	output *jsonschema.Resolved // for tests: every result must match it
	run    func(ctx context.Context, c *Call, args []byte) (*sdk.CallToolResult, error)
}

// Call is what a tool handler gets: the caller and the transaction confined
// to the caller's tenant (which also carries the call's audit record).
type Call struct {
	*Caller
	Tx      pgx.Tx
	cursors cursorKey
	srv     *Server // for the few tools that need more than the tenant's tables
	// afterCommit runs once the call's transaction has committed (for
	// caches of this process; other processes hear through NOTIFY).
	afterCommit []func()
	rec         *store.AuditRecord
}

// auditReason says in the call's audit record what an allowed call did
// when its arguments' digest cannot (set_semantic_search: on or off).
func (c *Call) auditReason(reason string) {
	if c.rec != nil {
		c.rec.Reason = reason
	}
}

// ToolSpec describes a tool for [newTool].
type ToolSpec struct {
	Name, Title, Description string
	Role                     tenancy.Role
	Scope                    string
	ReadOnly, Idempotent     bool
	Destructive              bool
	// Input adjusts the schema inferred from the input type (limits, enums).
	Input func(*jsonschema.Schema)
	// OwnConnection: the tool reads nothing through Call.Tx and changes
	// nothing, and uses a connection of its own (query): it runs outside a
	// tenant transaction, so it holds no tenant connection while it waits
	// for its own (see store's "Connections").
	OwnConnection bool
	// NoTenantData: the tool reads and changes nothing in the database
	// (everything it says comes from the caller): it runs outside any
	// transaction, and Call.Tx is nil. Implies ReadOnly.
	NoTenantData bool
	// ReadsAudit: the tool reads the tenant's audit log through Call.Tx.
	// Before its transaction opens, the tenant's records still in the
	// audit intake are moved into the log (store.DB.SettleAudit), so that
	// it reads every record committed before the call.
	ReadsAudit bool
}

// Texter lets a tool result provide readable text next to its structured
// content; without it the text is the JSON of the result.
type Texter interface{ Text() string }

// newTool builds a Tool whose arguments decode into In and whose result Out
// is returned as structured content.
func newTool[In, Out any](spec ToolSpec, handle func(ctx context.Context, c *Call, in In) (Out, error)) *Tool {
	in := objectSchema[In](spec.Name, "input")
	if spec.Input != nil {
		spec.Input(in)
	}
	boundSchema(in)
	resolved, err := in.Resolve(nil)
	if err != nil {
		panic(fmt.Sprintf("tool %s: input schema: %v", spec.Name, err))
	}
	out := objectSchema[Out](spec.Name, "output")
	resolvedOut, err := out.Resolve(nil)
	if err != nil {
		panic(fmt.Sprintf("tool %s: output schema: %v", spec.Name, err))
	}
	destructive := spec.Destructive
	return &Tool{
		Name:         spec.Name,
		Role:         spec.Role,
		Scope:        spec.Scope,
		ownConn:      spec.OwnConnection,
		readOnly:     spec.ReadOnly || spec.NoTenantData,
		noTenantData: spec.NoTenantData,
		readsAudit:   spec.ReadsAudit,
		input:        resolved,
		output:       resolvedOut,
		def: &sdk.Tool{
			Name:         spec.Name,
			Title:        spec.Title,
			Description:  spec.Description,
			InputSchema:  in,
			OutputSchema: out,
			Annotations: &sdk.ToolAnnotations{
				Title:           spec.Title,
				ReadOnlyHint:    spec.ReadOnly,
				IdempotentHint:  spec.Idempotent,
				DestructiveHint: &destructive,
				OpenWorldHint:   new(false),
			},
		},
		run: func(ctx context.Context, c *Call, args []byte) (*sdk.CallToolResult, error) {
			var v In
			if err := json.Unmarshal(args, &v); err != nil {
				// validate has checked the arguments against the schema
				// inferred from In, so this is a mismatch between the two
				// (a bug); the decoder's message names Go types.
				return nil, invalidArgs("the arguments do not match the tool's input schema")
			}
			res, err := handle(ctx, c, v)
			if err != nil {
				return nil, err
			}
			return result(res)
		},
	}
}

// objectSchema infers the schema of T (of *T's element for a pointer). MCP
// requires input and output schemas to be objects at the root; clients drop
// tools whose schemas are not. Nil-able Go types (slices, pointers) infer as
// ["null", X]; tools never emit null (they omit or send empty values), so the
// null branch is removed, which also keeps the schemas portable to
// single-type dialects.
func objectSchema[T any](tool, which string) *jsonschema.Schema {
	t := reflect.TypeFor[T]()
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	s, err := jsonschema.ForType(t, nil)
	if err != nil {
		panic(fmt.Sprintf("tool %s: %s schema: %v", tool, which, err))
	}
	dropNull(s)
	if s.Type != "object" {
		panic(fmt.Sprintf("tool %s: %s schema must be an object, not %q", tool, which, s.Type))
	}
	return s
}

func dropNull(s *jsonschema.Schema) {
	if s == nil {
		return
	}
	if len(s.Types) == 2 && slices.Contains(s.Types, "null") {
		s.Type = s.Types[0]
		if s.Type == "null" {
			s.Type = s.Types[1]
		}
		s.Types = nil
	}
	for _, p := range s.Properties {
		dropNull(p)
	}
	dropNull(s.Items)
	dropNull(s.AdditionalProperties)
}

func result(v any) (*sdk.CallToolResult, error) {
	text, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if t, ok := v.(Texter); ok {
		text = []byte(t.Text())
	}
	return &sdk.CallToolResult{
		Content:           []sdk.Content{&sdk.TextContent{Text: string(text)}},
		StructuredContent: v,
	}, nil
}

// validate checks raw arguments against Gatehouse's text rules (see
// checkText) and the tool's schema, and returns them ready to decode.
// Property names must match exactly: the schema forbids unknown
// properties, so a case-folded duplicate ("Title" next to "title") is
// rejected here rather than silently merged by encoding/json. Errors wrap
// errInvalidArgs and name the argument and the rule.
func (t *Tool) validate(raw json.RawMessage) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		raw = []byte("{}")
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, invalidArgs("arguments are not valid JSON")
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, invalidArgs("arguments must be a JSON object")
	}
	if err := checkText(raw); err != nil {
		return nil, err
	}
	if err := t.input.Validate(normalizeNumbers(v)); err != nil {
		if msg := explain(t.input.Schema(), v, ""); msg != "" {
			return nil, invalidArgs(msg)
		}
		return nil, invalidArgs(schemaMessage(err))
	}
	return raw, nil
}

// normalizeNumbers turns json.Number into float64 for the validator, after
// UseNumber kept integers exact while decoding.
func normalizeNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalizeNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normalizeNumbers(e)
		}
	case json.Number:
		f, _ := x.Float64()
		return f
	}
	return v
}

// schemaMessage shortens the validator's message to what a model needs.
func schemaMessage(err error) string {
	msg := err.Error()
	msg = strings.ReplaceAll(msg, "validating root: ", "")
	msg = strings.ReplaceAll(msg, "validating /properties/", "")
	return msg
}

// errInvalidArgs marks a tool error caused by the caller's arguments.
var errInvalidArgs = errors.New("invalid arguments")

func invalidArgs(msg string) error { return fmt.Errorf("%w: %s", errInvalidArgs, msg) }
