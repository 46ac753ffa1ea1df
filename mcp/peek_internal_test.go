package mcp

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestScanRequest: the id, method and tool name are found wherever they
// sit, with escapes, nested values and odd spacing; a body cut short or
// malformed yields what was read before the damage and never panics.
func TestScanRequest(t *testing.T) {
	for _, tt := range []struct {
		body, id, method, name string
	}{
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{}}}`, `1`, "tools/call", "whoami"},
		{`{"params":{"arguments":{"a":[1,{"b":"}\""}]},"name":"add_todo"},"method":"tools/call","id":"x-1"}`, `"x-1"`, "tools/call", "add_todo"},
		{` { "id" : null , "method" : "tools\/list" } `, `null`, "tools/list", ""},
		{`{"jsonrpc":"2.0","method":"notifications/initialized"}`, ``, "notifications/initialized", ""},
		{`{"id":7,"method":"tools/call","params":{"name":"add_todo","arguments":{"title":"cut sh`, `7`, "tools/call", "add_todo"},
		{`{"id":7,"meth`, `7`, "", ""},
		{`[{"id":1,"method":"tools/call"}]`, ``, "", ""},
		{`{"id":1e3,"method":"ping","params":[1,2]}`, `1e3`, "ping", ""},
		{`not json`, ``, "", ""},
		{``, ``, "", ""},
	} {
		id, method, name := scanRequest([]byte(tt.body))
		if string(id) != tt.id || method != tt.method || name != tt.name {
			t.Errorf("%s: id %q method %q name %q, want %q %q %q", tt.body, id, method, name, tt.id, tt.method, tt.name)
		}
	}
}

// TestPeekKeepsTheBody: the whole body, beyond the prefix peek reads,
// reaches the handler unchanged.
func TestPeekKeepsTheBody(t *testing.T) {
	big := `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"save_document","arguments":{"body":"` + strings.Repeat("x", 3*peekPrefix) + `"}}}`
	r, _ := http.NewRequest(http.MethodPost, "/mcp", strings.NewReader(big))
	id, method, what := peek(r)
	if string(id) != "3" || method != "tools/call" || what != "save_document" {
		t.Errorf("peek: %s %s %s", id, method, what)
	}
	var v map[string]any
	if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
		t.Fatalf("the body after peek: %v", err)
	}
}

func FuzzScanRequest(f *testing.F) {
	f.Add([]byte(`{"id":1,"method":"tools/call","params":{"name":"x"}}`))
	f.Add([]byte(`{"a":[{"b":"\"}"}],"id":"\u00e9"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, _, _ := scanRequest(b)
		if id != nil && !json.Valid(id) && json.Valid(b) {
			t.Errorf("id %q of a valid document is not valid JSON", id)
		}
	})
}
