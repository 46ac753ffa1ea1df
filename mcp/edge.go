package mcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/store"
)

// The go-sdk's Streamable HTTP handler (v1.8.0) cannot be configured to do
// what MCP clients in the wild need at the edge, so edge wraps it:
//
//   - Content negotiation (MCP transports, "Sending Messages to the
//     Server"; RFC 9110 §12.5.1): the SDK answers 400 unless Accept names
//     both application/json and text/event-stream. edge serves a client
//     that accepts either in the type it accepts (a handler built with
//     JSONResponse for application/json alone), SSE when both are
//     accepted, and refuses with 406 only an Accept that admits neither.
//   - JSON-RPC errors (JSON-RPC 2.0 §5.1): the SDK answers malformed
//     messages, unknown methods and malformed params with text/plain 400s
//     or error messages that name Go types (jsonrpc2.wireDecode,
//     mcp.CallToolParamsRaw) and repeat the body. edge checks each message
//     first and answers in plain words without echoing the body: -32700
//     (not JSON) and -32600 (not a JSON-RPC request) with HTTP 400; -32601
//     (unknown method) and -32602 (bad params, such as an unknown
//     logging/setLevel level) in a normal response to the request's id.
//     (From protocol 2026-07-28 the SDK itself answers unknown methods with
//     -32601 and HTTP 404, as that revision asks; edge leaves those to it.)
//   - Whatever text/plain error the SDK still writes becomes a JSON-RPC
//     error body with the same status (see plainErrors).
type edge struct {
	sse, json http.Handler // the SDK's handler answering in SSE / in JSON
	maxBody   int64
}

// JSON-RPC 2.0 error codes (JSON-RPC 2.0 §5.1).
const (
	codeParseError     = -32700
	codeInvalidRequest = -32600
	codeMethodNotFound = -32601
	codeInvalidParams  = -32602
)

// newProtocol is the first revision whose unknown-method answer the SDK
// gets right itself.
const newProtocol = "2026-07-28"

func (e *edge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w = &plainErrors{ResponseWriter: w}
	if r.Method != http.MethodPost {
		e.sse.ServeHTTP(w, r)
		return
	}
	wantJSON, wantSSE := negotiate(r.Header.Values("Accept"))
	if !wantJSON && !wantSSE {
		writeRPCError(w, http.StatusNotAcceptable, nil, codeInvalidRequest,
			"the Accept header admits neither application/json nor text/event-stream; this server answers in one of them")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, e.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeRPCError(w, http.StatusRequestEntityTooLarge, nil, codeInvalidRequest, fmt.Sprintf("the request body is larger than %d bytes", mbe.Limit))
			return
		}
		writeRPCError(w, http.StatusBadRequest, nil, codeInvalidRequest, "the request body could not be read completely")
		return
	}
	if rej := checkBody(body, r.Header.Get("Mcp-Protocol-Version")); rej != nil {
		switch {
		case rej.status == http.StatusAccepted: // a notification nobody handles
			w.WriteHeader(http.StatusAccepted)
		case rej.status != http.StatusOK:
			writeRPCError(w, rej.status, rej.id, rej.code, rej.msg)
		case wantSSE && !wantJSON:
			writeRPCEvent(w, rej.id, rej.code, rej.msg)
		default:
			writeRPCError(w, http.StatusOK, rej.id, rej.code, rej.msg)
		}
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.Header = r.Header.Clone()
	r.Header.Set("Accept", "application/json, text/event-stream")
	if wantJSON && !wantSSE {
		e.json.ServeHTTP(w, r)
		return
	}
	e.sse.ServeHTTP(w, r)
}

// negotiate reads Accept (RFC 9110 §12.5.1): which of the two types the
// client admits. No Accept header admits both; q=0 refuses a type.
func negotiate(values []string) (jsonOK, sseOK bool) {
	if len(values) == 0 {
		return true, true
	}
	for _, v := range values {
		for _, rng := range strings.Split(v, ",") {
			typ, params, err := mime.ParseMediaType(strings.TrimSpace(rng))
			if err != nil {
				continue
			}
			if q, ok := params["q"]; ok {
				if f, err := strconv.ParseFloat(q, 64); err == nil && f == 0 {
					continue
				}
			}
			switch typ {
			case "application/json", "application/*":
				jsonOK = true
			case "text/event-stream", "text/*":
				sseOK = true
			case "*/*":
				jsonOK, sseOK = true, true
			}
		}
	}
	return jsonOK, sseOK
}

// rejection is edge's answer to a message it will not pass to the SDK.
type rejection struct {
	status int // 400, or 200 for an error answering a valid request, 202 to drop a notification
	id     json.RawMessage
	code   int
	msg    string
}

// checkBody checks a POST body: a JSON-RPC message or (before 2025-06-18)
// a batch of them. nil means pass it to the SDK.
func checkBody(body []byte, version string) *rejection {
	if !json.Valid(body) {
		var v any
		var se *json.SyntaxError
		if err := json.Unmarshal(body, &v); errors.As(err, &se) {
			return &rejection{status: http.StatusBadRequest, code: codeParseError,
				msg: fmt.Sprintf("parse error: the body is not valid JSON (at byte %d)", se.Offset)}
		}
		return &rejection{status: http.StatusBadRequest, code: codeParseError, msg: "parse error: the body is not valid JSON"}
	}
	switch firstByte(body) {
	case '{':
		return checkMessage(body, version)
	case '[':
		var batch []json.RawMessage
		_ = json.Unmarshal(body, &batch)
		if len(batch) == 0 {
			return &rejection{status: http.StatusBadRequest, code: codeInvalidRequest, msg: "invalid request: the batch is empty"}
		}
		for _, m := range batch {
			if rej := checkMessage(m, version); rej != nil {
				rej.status = http.StatusBadRequest // one answer for the whole batch
				return rej
			}
		}
		return nil
	}
	return &rejection{status: http.StatusBadRequest, code: codeInvalidRequest,
		msg: "invalid request: the body must be a JSON-RPC message, a JSON object with jsonrpc, method and (for a request) id"}
}

// firstByte is the first byte of valid JSON after white space: it tells
// the kind of value ('{', '[', '"', 't', 'f', 'n', or a number's first).
func firstByte(b []byte) byte {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// wireMessage is a JSON-RPC message as sent (JSON-RPC 2.0 §4, §5).
type wireMessage struct {
	JSONRPC *string         `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  json.RawMessage `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

// checkMessage checks one JSON-RPC message (a JSON object).
func checkMessage(raw []byte, version string) *rejection {
	var m wireMessage
	bad := func(msg string) *rejection {
		return &rejection{status: http.StatusBadRequest, code: codeInvalidRequest, msg: "invalid request: " + msg}
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return bad("a JSON-RPC message must be a JSON object")
	}
	if m.JSONRPC == nil || *m.JSONRPC != "2.0" {
		return bad(`"jsonrpc" must be "2.0"`)
	}
	isCall := len(m.ID) > 0
	if isCall {
		switch c := firstByte(m.ID); {
		case c == '"', c == '-', c >= '0' && c <= '9':
		default:
			return bad(`"id" must be a string or a number`)
		}
	}
	if len(m.Method) == 0 {
		if isCall && (len(m.Result) > 0 || len(m.Error) > 0) {
			return nil // a response to a request of ours; the SDK decides
		}
		return bad(`"method" is missing: a request needs "method" and "id", a notification "method" alone`)
	}
	var method string
	if json.Unmarshal(m.Method, &method) != nil {
		return bad(`"method" must be a string`)
	}
	fail := func(code int, msg string) *rejection {
		return &rejection{status: http.StatusOK, id: m.ID, code: code, msg: msg}
	}
	params, known := serverParams[method]
	if !known {
		if !isCall {
			return &rejection{status: http.StatusAccepted}
		}
		if version >= newProtocol {
			return nil
		}
		return fail(codeMethodNotFound, fmt.Sprintf("method not found: this server does not handle %q", store.CleanText(method, 64)))
	}
	if notification := strings.HasPrefix(method, "notifications/"); notification && isCall {
		return bad(method + ` is a notification: send it without "id"`)
	} else if !notification && !isCall {
		return bad(method + ` is a request: send it with an "id"`)
	}
	if len(m.Params) > 0 && !bytes.Equal(m.Params, []byte("null")) {
		if firstByte(m.Params) != '{' {
			return fail(codeInvalidParams, `invalid params: "params" must be a JSON object`)
		}
	} else if params.required {
		return fail(codeInvalidParams, fmt.Sprintf(`invalid params: %s needs "params"`, method))
	}
	if len(m.Params) > 0 && params.typ != nil {
		if msg := promptArgumentText(method, m.Params); msg != "" {
			return fail(codeInvalidParams, "invalid arguments: "+msg)
		}
		p := reflect.New(params.typ).Interface()
		if err := json.Unmarshal(m.Params, p); err != nil {
			return fail(codeInvalidParams, "invalid params: "+paramsProblem(err))
		}
		if method == "logging/setLevel" {
			if lvl := p.(*setLevelParams).Level; !slices.Contains(loggingLevels, lvl) {
				return fail(codeInvalidParams, `invalid params: "level" must be one of `+strings.Join(loggingLevels, ", "))
			}
		}
	}
	return nil
}

// loggingLevels are MCP's log levels (RFC 5424 severities), least severe
// first (MCP specification, server utilities, logging).
var loggingLevels = []string{"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"}

// setLevelParams are logging/setLevel's params (the SDK's type is
// deprecated with logging from protocol 2026-07-28; earlier revisions,
// which Gatehouse serves, define it).
type setLevelParams struct {
	Level string `json:"level"`
}

type paramsRule struct {
	typ      reflect.Type // the SDK's params type, to check the shape of params
	required bool         // the SDK refuses the method without params
}

func paramsOf[T any](required bool) paramsRule {
	return paramsRule{typ: reflect.TypeFor[T](), required: required}
}

// serverParams are the methods the SDK's server handles (go-sdk v1.8.0,
// serverMethodInfos) and their params.
var serverParams = map[string]paramsRule{
	"completion/complete":              paramsOf[sdk.CompleteParams](true),
	"server/discover":                  paramsOf[sdk.DiscoverParams](false),
	"initialize":                       paramsOf[sdk.InitializeParams](true),
	"ping":                             paramsOf[sdk.PingParams](false),
	"prompts/list":                     paramsOf[sdk.ListPromptsParams](false),
	"prompts/get":                      paramsOf[sdk.GetPromptParams](true),
	"tools/list":                       paramsOf[sdk.ListToolsParams](false),
	"tools/call":                       paramsOf[sdk.CallToolParamsRaw](true),
	"resources/list":                   paramsOf[sdk.ListResourcesParams](false),
	"resources/templates/list":         paramsOf[sdk.ListResourceTemplatesParams](false),
	"resources/read":                   paramsOf[sdk.ReadResourceParams](true),
	"logging/setLevel":                 paramsOf[setLevelParams](true),
	"resources/subscribe":              paramsOf[sdk.SubscribeParams](true),
	"subscriptions/listen":             {required: true},
	"resources/unsubscribe":            paramsOf[sdk.UnsubscribeParams](true),
	"notifications/cancelled":          paramsOf[sdk.CancelledParams](false),
	"notifications/initialized":        paramsOf[sdk.InitializedParams](false),
	"notifications/roots/list_changed": {},
	"notifications/progress":           paramsOf[sdk.ProgressNotificationParams](true),
}

// promptArgumentText checks the argument values of prompts/get
// (params.arguments) and completion/complete (params.argument.value and
// params.context.arguments) as tools' arguments are checked (checkLiteral,
// args.go): valid UTF-8 and no unpaired UTF-16 surrogate escape. The SDK
// decodes them with encoding/json, which silently replaces both with U+FFFD,
// so a prompt would otherwise look up, render and echo text the caller never
// sent. A value that is not a string is named too (encoding/json's error
// names only the map). NUL and other control characters are left to the
// prompt's own check (Prompt.validate), which audits the refusal. It returns
// "" when there is nothing to say, or when params do not have the method's
// shape (the SDK's decoding then words that).
func promptArgumentText(method string, params json.RawMessage) string {
	type value struct {
		name string
		raw  json.RawMessage
	}
	var values []value
	add := func(args map[string]json.RawMessage) {
		for _, name := range slices.Sorted(maps.Keys(args)) {
			values = append(values, value{name, args[name]})
		}
	}
	switch method {
	case "prompts/get":
		var p struct {
			Arguments map[string]json.RawMessage `json:"arguments"`
		}
		if json.Unmarshal(params, &p) != nil {
			return ""
		}
		add(p.Arguments)
	case "completion/complete":
		var p struct {
			Argument *struct {
				Name  string          `json:"name"`
				Value json.RawMessage `json:"value"`
			} `json:"argument"`
			Context *struct {
				Arguments map[string]json.RawMessage `json:"arguments"`
			} `json:"context"`
		}
		if json.Unmarshal(params, &p) != nil {
			return ""
		}
		if p.Argument != nil && len(p.Argument.Value) > 0 {
			values = append(values, value{p.Argument.Name, p.Argument.Value})
		}
		if p.Context != nil {
			add(p.Context.Arguments)
		}
	default:
		return ""
	}
	for _, v := range values {
		name := truncate(strings.ToValidUTF8(v.name, "?"), 64)
		switch c := firstByte(v.raw); {
		case c == 'n': // null: absent
		case c != '"':
			return fmt.Sprintf("argument %q must be a string, not %s", name, jsonKindOf(c))
		default:
			if err := checkLiteral(v.raw); err != nil && !errors.Is(err, errNULText) {
				return fmt.Sprintf("argument %q %s", name, err)
			}
		}
	}
	return ""
}

// jsonKindOf names the kind of JSON value that starts with c.
func jsonKindOf(c byte) string {
	switch c {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	}
	return "a number"
}

// paramsProblem words a params decoding error without Go type names or
// the values sent.
func paramsProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			return `"params" has a value of the wrong type`
		}
		return fmt.Sprintf("params.%s must be %s, not %s", field, goKind(te.Type), jsonValueKind(te.Value))
	}
	return `"params" does not have the shape this method needs`
}

// goKind names the JSON type a Go type decodes from.
func goKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return "another type"
}

// jsonValueKind names the JSON value kind in an UnmarshalTypeError.
func jsonValueKind(v string) string {
	switch {
	case v == "string":
		return "a string"
	case v == "bool":
		return "a boolean"
	case v == "array":
		return "an array"
	case v == "object":
		return "an object"
	case strings.HasPrefix(v, "number"):
		return "a number"
	}
	return "another type"
}

// writeRPCError answers with a JSON-RPC error object (JSON-RPC 2.0 §5.1);
// id nil is null (the request's id could not be read).
func writeRPCError(w http.ResponseWriter, status int, id json.RawMessage, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.WriteHeader(status)
	_, _ = w.Write(rpcError(id, code, msg))
}

// writeRPCEvent answers with the error as the one event of an SSE stream,
// for a client that accepts only text/event-stream.
func writeRPCEvent(w http.ResponseWriter, id json.RawMessage, code int, msg string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache, no-transform")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprintf(w, "event: message\ndata: %s\n\n", rpcError(id, code, msg))
}

func rpcError(id json.RawMessage, code int, msg string) []byte {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "error": map[string]any{"code": code, "message": msg}})
	return b
}

// plainErrors turns the SDK's text/plain error answers into JSON-RPC error
// bodies with the same status, keeping its message only when it names no
// Go internals.
type plainErrors struct {
	http.ResponseWriter
	status int // an error being rewritten; its body is collected in buf
	buf    bytes.Buffer
}

func (p *plainErrors) WriteHeader(status int) {
	if status >= 400 && strings.HasPrefix(p.Header().Get("Content-Type"), "text/plain") {
		p.status = status
		return
	}
	p.ResponseWriter.WriteHeader(status)
}

func (p *plainErrors) Write(b []byte) (int, error) {
	if p.status != 0 {
		p.buf.Write(b)
		if msg := strings.TrimSpace(p.buf.String()); strings.HasSuffix(p.buf.String(), "\n") {
			status := p.status
			p.status = 0
			if goInternals(msg) {
				msg = "invalid request"
			}
			writeRPCError(p.ResponseWriter, status, nil, codeInvalidRequest, store.CleanText(msg, 300))
		}
		return len(b), nil
	}
	return p.ResponseWriter.Write(b)
}

func (p *plainErrors) Unwrap() http.ResponseWriter { return p.ResponseWriter }

func (p *plainErrors) Flush() {
	if f, ok := p.ResponseWriter.(http.Flusher); ok && p.status == 0 {
		f.Flush()
	}
}

// goInternals reports whether an SDK message names Go types or decoder
// internals.
func goInternals(msg string) bool {
	for _, s := range []string{"Go value", "Go struct", "jsonrpc2.", "mcp.", "reflect", "unmarshal", "map[", "interface {"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
