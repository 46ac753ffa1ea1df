package mcp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// oddValues is the family of argument values every tool must answer
// clearly: text PostgreSQL refuses (NUL, invalid UTF-8, unpaired
// surrogates), control characters, over-long values, numbers out of any
// column's range, impossible dates, and values of the wrong JSON type. Each
// is a JSON literal (raw bytes: some are not valid UTF-8).
var oddValues = []string{
	`""`, `"x"`, `"a\u0000b"`, "\"x\xffy\"", "\"overlong \xc0\x80\"", "\"cesu \xed\xa0\x80\"",
	`"\ud800"`, `"a\udc00b"`, `"\ud83d\ude00 paired"`, `"\u001b[31m\u0007"`, `"\u0085\u2028"`,
	`"` + strings.Repeat("é", 70000) + `"`,
	`0`, `-1`, `1.5`, `2147483648`, `-9223372036854775809`, `1e308`, `-1e400`, `9007199254740993`,
	`true`, `null`, `[]`, `{}`, `["a\u0000"]`, `[` + strings.Repeat(`"t",`, 500) + `"t"]`,
	`"0000-00-00"`, `"0000-01-01"`, `"9999-12-31"`, `"2026-02-30"`, `"99999-01-01"`,
	`"0001-01-01T00:00:00Z"`, `"9999-12-31T23:59:59Z"`, `"2026-11-30T25:00:00Z"`, `"10000-01-01T00:00:00Z"`,
	`"DELETE FROM todos"`, `"select 1; select 2"`, `"SELECT 1 /*"`, `"' OR 1=1 --"`, `"a & b | !c <-> d:*"`,
}

// toolSchemas lists every tool's input schema, by name, from tools/list.
func toolSchemas(t testing.TB, g *gatehouse, key string) map[string]map[string]any {
	t.Helper()
	client := sdk.NewClient(&sdk.Implementation{Name: "fuzz", Version: "1"}, nil)
	cs, err := client.Connect(context.Background(), &sdk.StreamableClientTransport{
		Endpoint: g.url, HTTPClient: &http.Client{Transport: bearer{key, http.DefaultTransport}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for _, tool := range res.Tools {
		b, _ := json.Marshal(tool.InputSchema)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		out[tool.Name] = m
	}
	return out
}

// plausible is a valid-looking JSON value for a property schema.
func plausible(p map[string]any) string {
	if enum, ok := p["enum"].([]any); ok && len(enum) > 0 {
		b, _ := json.Marshal(enum[0])
		return string(b)
	}
	switch p["type"] {
	case "integer", "number":
		return "1"
	case "boolean":
		return "true"
	case "array":
		return `["x"]`
	case "object":
		return "{}"
	}
	if p["format"] == "date" {
		return `"2026-12-01"`
	}
	return `"x"`
}

// argsWith is the JSON arguments of a tool with its required properties
// set plausibly and prop set to the raw literal val.
func argsWith(schema map[string]any, prop, val string) string {
	props, _ := schema["properties"].(map[string]any)
	fields := map[string]string{}
	if req, ok := schema["required"].([]any); ok {
		for _, r := range req {
			name := r.(string)
			p, _ := props[name].(map[string]any)
			fields[name] = plausible(p)
		}
	}
	if prop != "" {
		fields[prop] = val
	}
	var parts []string
	for _, k := range slices.Sorted(mapsKeys(fields)) {
		parts = append(parts, fmt.Sprintf("%q:%s", k, fields[k]))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func mapsKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// inputProbe calls tools through the real HTTP pipeline and checks that
// each call got a clear answer.
type inputProbe struct {
	g   *gatehouse
	key string
	tn  *tenancy.Tenant
	seq atomic.Int64
}

func newInputProbe(t testing.TB) *inputProbe {
	g := newGatehouse(t)
	p := &inputProbe{g: g, key: g.key(t, "acme.com", tenancy.Admin)}
	var err error
	if p.tn, err = g.db.FindTenantByKey(context.Background(), "acme.com"); err != nil {
		t.Fatal(err)
	}
	return p
}

// check calls tool with the raw arguments (and user agent) and fails t if
// the answer is an internal error, a 5xx, a log line above info or an
// ERROR audit record. It returns the tool's text and whether it was a tool error
// ("" when the request never reached the tool).
func (p *inputProbe) check(t *testing.T, tool, args, ua string) (string, bool) {
	t.Helper()
	return p.checkWithID(t, tool, args, ua, fmt.Sprintf("probe-%08d", p.seq.Add(1)))
}

// checkWithID is check with the X-Request-Id header to send (any bytes;
// the server replaces one it does not accept, and the record is found by
// the id it answers with).
func (p *inputProbe) checkWithID(t *testing.T, tool, args, ua, reqID string) (string, bool) {
	t.Helper()
	oneLine := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r == '\r' || r == '\n' {
				return ' '
			}
			return r
		}, s)
	}
	nameJSON, _ := json.Marshal(tool)
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":%s,"arguments":%s}}`, nameJSON, args)
	logsBefore := len(p.g.logs.String())
	status, h, resp := rawPostHeaders(t, p.g, []string{"Authorization: Bearer " + p.key, "X-Request-Id: " + oneLine(reqID), "User-Agent: " + oneLine(ua)}, body)
	if status == 0 || status >= 500 || strings.Contains(resp, "internal error") {
		t.Fatalf("%s %.200s: %d %.500s", tool, args, status, resp)
	}
	id := h.Get("X-Request-Id")
	if logs := p.g.logs.String()[logsBefore:]; strings.Contains(logs, `"level":"ERROR"`) || strings.Contains(logs, `"level":"WARN"`) {
		t.Fatalf("%s %.200s: logged above info:\n%s", tool, args, logs)
	}
	var decision, reason string
	err := p.g.db.Pool().QueryRow(context.Background(), "SELECT decision, reason FROM "+
		pgx.Identifier{p.tn.Schema, "audit_log"}.Sanitize()+" WHERE request_id = $1", id).Scan(&decision, &reason)
	if err == nil && decision == store.Failed {
		t.Fatalf("%s %.200s: audited ERROR (%s)", tool, args, reason)
	}
	var msg struct {
		Result struct {
			Content []struct{ Text string }
			IsError bool
		}
	}
	if _, data, ok := strings.Cut(resp, "data: "); ok {
		_ = json.Unmarshal([]byte(strings.TrimSpace(data)), &msg)
	}
	if len(msg.Result.Content) == 0 {
		return "", false
	}
	if msg.Result.IsError && decision != store.Denied {
		t.Errorf("%s %.200s: tool error %q audited %q, want DENIED", tool, args, msg.Result.Content[0].Text, decision)
	}
	return msg.Result.Content[0].Text, msg.Result.IsError
}

// sortedNames are the keys of m in order.
func sortedNames[V any](m map[string]V) []string {
	return slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
}

// TestEveryToolArgumentFamily puts every member of oddValues in every
// property of every tool, through the real HTTP pipeline and PostgreSQL:
// each call gets a clear answer (see inputProbe.check).
func TestEveryToolArgumentFamily(t *testing.T) {
	p := newInputProbe(t)
	schemas := toolSchemas(t, p.g, p.key)
	calls := 0
	for _, name := range sortedNames(schemas) {
		s := schemas[name]
		props, _ := s["properties"].(map[string]any)
		for _, prop := range sortedNames(props) {
			for _, v := range oddValues {
				p.check(t, name, argsWith(s, prop, v), "")
				calls++
			}
		}
		for _, args := range []string{`{"` + "\x00" + `":1}`, `{"a\u0000":1}`, `"not an object"`, `[]`, `null`} {
			p.check(t, name, args, "x\xffy")
			calls++
		}
	}
	if len(schemas) < 20 || calls < 1000 {
		t.Fatalf("%d tools, %d calls: the test exercises too little", len(schemas), calls)
	}
}

// FuzzToolArguments: any arguments to any tool, with any user agent, get a
// clear answer: a result or a tool error, never an internal error, a 5xx,
// a log line above info or an ERROR audit record. The seeds are one plausible
// call per tool and a few odd ones (TestEveryToolArgumentFamily covers the
// family exhaustively); `make fuzz-db` fuzzes from them for a bounded time.
func FuzzToolArguments(f *testing.F) {
	p := newInputProbe(f)
	schemas := toolSchemas(f, p.g, p.key)
	for _, name := range sortedNames(schemas) {
		f.Add(name, argsWith(schemas[name], "", ""), "Mozilla/5.0", "")
	}
	f.Add("add_todo", `{"title":"a\u0000b","notes":"\ud800"}`, "x\xffy", "req-\xff\x00")
	f.Add("query", `{"sql":"select 1; delete from todos"}`, "nul\x00ua", "")
	f.Add("save_document", `{"title":"t","body":"b","tags":["\u001b"]}`, "", strings.Repeat("r", 70))
	f.Fuzz(func(t *testing.T, tool, args, ua, reqID string) {
		if !json.Valid([]byte(args)) {
			args = fmt.Sprintf("%q", args) // keep the body JSON-RPC; the arguments become a string
		}
		p.checkWithID(t, tool, args, ua, reqID)
	})
}

// TestToolInputsGetClearAnswers: members of the family give a tool error
// naming the argument and the rule, audited DENIED, never ERROR.
func TestToolInputsGetClearAnswers(t *testing.T) {
	p := newInputProbe(t)
	for _, c := range []struct{ tool, args, want string }{
		{"add_todo", `{"title":"a\u0000b"}`, `title must not contain the NUL character`},
		{"add_todo", "{\"title\":\"a\xffb\"}", `title must be valid UTF-8`},
		{"add_todo", `{"title":"a\ud800b"}`, `title contains an unpaired UTF-16 surrogate`},
		{"add_todo", `{"title":"x","notes":"\udc00"}`, `notes contains an unpaired UTF-16 surrogate`},
		{"add_todo", `{"title":"` + strings.Repeat("x", 501) + `"}`, `title must be at most 500 characters`},
		{"add_todo", `{"title":"x","due_on":"99999-01-01"}`, `due_on must be a date as YYYY-MM-DD`},
		{"add_todo", `{"title":"x","due_on":"2026-02-30"}`, `due_on must be a calendar date`},
		{"add_todo", `{"title":5}`, `title must be a string, not an integer`},
		{"add_todo", `{"Title":"x","title":"y"}`, `has no property "Title"`},
		{"update_todo", `{"id":"x","title":"\u0000"}`, `title must not contain the NUL character`},
		{"list_todos", `{"limit":1e30}`, `limit must be at most 200`},
		{"list_todos", `{"limit":2147483648}`, `limit must be at most 200`},
		{"list_todos", `{"limit":1.5}`, `limit must be an integer`},
		{"create_project", `{"name":"p\u0000"}`, `name must not contain the NUL character`},
		{"save_document", `{"title":"t","body":"b","tags":["ok","bad\u0000"]}`, `tags[1] must not contain the NUL character`},
		{"save_document", `{"title":"t","body":"\ud800"}`, `body contains an unpaired UTF-16 surrogate`},
		{"search_documents", `{"query":"x\u0000"}`, `query must not contain the NUL character`},
		{"list_documents", `{"tag":"\u0000"}`, `tag must not contain the NUL character`},
		{"read_audit_log", `{"actor":"\u0000"}`, `actor must not contain the NUL character`},
		{"read_audit_log", `{"since":"10000-01-01T00:00:00Z"}`, `since must be an RFC 3339 time`},
		{"query", `{"sql":"select '\u0000'"}`, `sql must not contain the NUL character`},
		{"query", `{"sql":"DELETE FROM todos"}`, `only one read-only SELECT, VALUES or TABLE statement is allowed; DELETE is not one`},
		{"query", `{"sql":"  /* hi */ UPDATE todos SET done = true"}`, `UPDATE is not one`},
		{"query", `{"sql":"select 1; select 2"}`, `one statement only`},
		{"query", `{"sql":"SELECT 1; DELETE FROM todos"}`, `one statement only`},
		{"query", `{"sql":"WITH d AS (DELETE FROM todos RETURNING *) SELECT * FROM d"}`, `would change or lock data`},
		{"query", `{"sql":"select pg_sleep(6)"}`, `longer than its 5 s limit`},
	} {
		got, isErr := p.check(t, c.tool, c.args, "")
		if !isErr || !strings.Contains(got, c.want) {
			t.Errorf("%s %.80s = %q (error %v), want an error saying %q", c.tool, c.args, got, isErr, c.want)
		}
		for _, leak := range []string{"Go struct", "json:", "SQLSTATE", "row_to_json", "DECLARE", "prepared statement"} {
			if strings.Contains(got, leak) {
				t.Errorf("%s %.80s: the message %q speaks of our internals (%s)", c.tool, c.args, got, leak)
			}
		}
	}
}
