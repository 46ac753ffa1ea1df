package mcp_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// rpcAnswer is one HTTP answer to a JSON-RPC POST, its message decoded
// from a JSON body or from the first SSE event.
type rpcAnswer struct {
	status      int
	contentType string
	body        string
	msg         struct {
		ID     json.RawMessage `json:"id"`
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
}

// postAccept POSTs body to /mcp with the given Accept header values (none:
// no Accept header).
func postAccept(t *testing.T, g *gatehouse, key, body string, accept ...string) *rpcAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, g.url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	for _, a := range accept {
		req.Header.Add("Accept", a)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	a := &rpcAnswer{status: res.StatusCode, contentType: res.Header.Get("Content-Type"), body: readBody(t, res)}
	data := a.body
	if strings.HasPrefix(a.contentType, "text/event-stream") {
		_, data, _ = strings.Cut(a.body, "data: ")
		data, _, _ = strings.Cut(data, "\n")
	}
	_ = json.Unmarshal([]byte(data), &a.msg)
	return a
}

const pingCall = `{"jsonrpc":"2.0","id":7,"method":"ping"}`

// TestContentNegotiation: a client that accepts JSON alone gets JSON, one
// that accepts SSE alone gets SSE, both (or no Accept, or wildcards) get
// SSE, and only an Accept that admits neither gets 406 (MCP transports,
// "Sending Messages to the Server"; RFC 9110 §12.5.1).
func TestContentNegotiation(t *testing.T) {
	g := newGatehouse(t)
	key := g.key(t, "acme.com", tenancy.Developer)
	addTodo := `{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"add_todo","arguments":{"title":"negotiated"}}}`
	for _, c := range []struct {
		accept []string
		want   string // "json", "sse" or "406"
	}{
		{[]string{"application/json"}, "json"},
		{[]string{"application/json; charset=utf-8"}, "json"},
		{[]string{"application/*"}, "json"},
		{[]string{"text/event-stream"}, "sse"},
		{[]string{"text/*"}, "sse"},
		{[]string{"application/json, text/event-stream"}, "sse"},
		{[]string{"application/json", "text/event-stream"}, "sse"},
		{nil, "sse"},
		{[]string{"*/*"}, "sse"},
		{[]string{"text/event-stream;q=0, application/json"}, "json"},
		{[]string{"application/json;q=0, text/event-stream"}, "sse"},
		{[]string{"text/html"}, "406"},
		{[]string{"application/xml, text/plain"}, "406"},
		{[]string{"application/json;q=0"}, "406"},
	} {
		for _, body := range []string{pingCall, addTodo} {
			a := postAccept(t, g, key, body, c.accept...)
			switch c.want {
			case "406":
				if a.status != http.StatusNotAcceptable || a.msg.Error == nil || !strings.Contains(a.msg.Error.Message, "Accept") {
					t.Errorf("Accept %q: %d %s %q, want 406 with a JSON-RPC error", c.accept, a.status, a.contentType, a.body)
				}
				continue
			case "json":
				if a.status != http.StatusOK || !strings.HasPrefix(a.contentType, "application/json") {
					t.Errorf("Accept %q: %d %s, want 200 application/json", c.accept, a.status, a.contentType)
				}
			case "sse":
				if a.status != http.StatusOK || !strings.HasPrefix(a.contentType, "text/event-stream") {
					t.Errorf("Accept %q: %d %s, want 200 text/event-stream", c.accept, a.status, a.contentType)
				}
			}
			if a.msg.Error != nil || len(a.msg.Result) == 0 || strings.Contains(string(a.msg.Result), `"isError":true`) {
				t.Errorf("Accept %q, %.40s: no result in %q", c.accept, body, a.body)
			}
		}
	}
}

// goTypeLeaks are what the SDK's own answers to malformed messages showed.
var goTypeLeaks = []string{"jsonrpc2.", "wireDecode", "mcp.", "CallToolParamsRaw", "reflect", "Go value", "Go struct", "map[string]", "unmarshal"}

// TestJSONRPCErrorsArePlain: malformed JSON-RPC gets a JSON-RPC error that
// says what is wrong in plain words, with no Go type names and nothing of
// the body echoed (each body carries the marker SECRETBODY).
func TestJSONRPCErrorsArePlain(t *testing.T) {
	g := newGatehouse(t)
	key := g.key(t, "acme.com", tenancy.Developer)
	for _, c := range []struct {
		body   string
		status int
		code   int
		want   string
	}{
		{`{"SECRETBODY"`, 400, -32700, "not valid JSON"},
		{`SECRETBODY`, 400, -32700, "not valid JSON"},
		{`"SECRETBODY"`, 400, -32600, "must be a JSON-RPC message"},
		{`[]`, 400, -32600, "batch is empty"},
		{`{"jsonrpc":"1.0","id":1,"method":"SECRETBODY"}`, 400, -32600, `"jsonrpc" must be "2.0"`},
		{`{"id":1,"method":"ping","x":"SECRETBODY"}`, 400, -32600, `"jsonrpc" must be "2.0"`},
		{`{"jsonrpc":"2.0","id":{"SECRETBODY":1},"method":"ping"}`, 400, -32600, `"id" must be a string or a number`},
		{`{"jsonrpc":"2.0","id":1,"method":["SECRETBODY"]}`, 400, -32600, `"method" must be a string`},
		{`{"jsonrpc":"2.0","id":1,"x":"SECRETBODY"}`, 400, -32600, `"method" is missing`},
		{`{"jsonrpc":"2.0","id":1,"method":"notifications/initialized","x":"SECRETBODY"}`, 400, -32600, "is a notification"},
		{`{"jsonrpc":"2.0","method":"tools/list","x":"SECRETBODY"}`, 400, -32600, "is a request"},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"SECRETBODY"}`, 200, -32602, `"params" must be a JSON object`},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5,"x":"SECRETBODY"}}`, 200, -32602, "params.name must be a string, not a number"},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call"}`, 200, -32602, `tools/call needs "params"`},
		{`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":5,"x":"SECRETBODY"}}`, 200, -32602, "params.protocolVersion must be a string"},
		{`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":["SECRETBODY"]}}`, 200, -32602, "params.uri must be a string, not an array"},
	} {
		for _, accept := range []string{"application/json, text/event-stream", "application/json", "text/event-stream"} {
			a := postAccept(t, g, key, c.body, accept)
			if a.status != c.status || a.msg.Error == nil || a.msg.Error.Code != c.code || !strings.Contains(a.msg.Error.Message, c.want) {
				t.Errorf("%s (Accept %s): %d %q, want %d with error %d saying %q", c.body, accept, a.status, a.body, c.status, c.code, c.want)
				continue
			}
			if c.status == http.StatusOK && string(a.msg.ID) != "1" {
				t.Errorf("%s: answered id %s, want the request's", c.body, a.msg.ID)
			}
			for _, leak := range append(goTypeLeaks, "SECRETBODY") {
				if strings.Contains(a.body, leak) {
					t.Errorf("%s: the answer %q contains %q", c.body, a.body, leak)
				}
			}
		}
	}
}

// TestUnknownMethodsAndLevels: an unknown method is a JSON-RPC -32601 error
// in a normal response (an unknown notification is accepted and ignored);
// logging/setLevel with a level MCP does not define is -32602.
func TestUnknownMethodsAndLevels(t *testing.T) {
	g := newGatehouse(t)
	key := g.key(t, "acme.com", tenancy.Developer)
	for _, c := range []struct {
		body, accept string
		status, code int
		contentType  string
	}{
		{`{"jsonrpc":"2.0","id":1,"method":"tasks/list"}`, "application/json, text/event-stream", 200, -32601, "application/json"},
		{`{"jsonrpc":"2.0","id":1,"method":"foo/bar","params":{}}`, "application/json", 200, -32601, "application/json"},
		{`{"jsonrpc":"2.0","id":1,"method":"resources/nope"}`, "text/event-stream", 200, -32601, "text/event-stream"},
		{`{"jsonrpc":"2.0","method":"notifications/foo"}`, "application/json, text/event-stream", 202, 0, ""},
		{`{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"loud"}}`, "application/json", 200, -32602, "application/json"},
		{`{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"DEBUG"}}`, "text/event-stream", 200, -32602, "text/event-stream"},
		{`{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":5}}`, "application/json", 200, -32602, "application/json"},
		{`{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{}}`, "application/json", 200, -32602, "application/json"},
		{`{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"warning"}}`, "application/json", 200, 0, "application/json"},
	} {
		a := postAccept(t, g, key, c.body, c.accept)
		if a.status != c.status || (c.contentType != "" && !strings.HasPrefix(a.contentType, c.contentType)) {
			t.Errorf("%s: %d %s %q, want %d %s", c.body, a.status, a.contentType, a.body, c.status, c.contentType)
			continue
		}
		switch {
		case c.code == 0 && c.status == 200 && (a.msg.Error != nil || len(a.msg.Result) == 0):
			t.Errorf("%s: %q, want a result", c.body, a.body)
		case c.code != 0 && (a.msg.Error == nil || a.msg.Error.Code != c.code || string(a.msg.ID) != "1"):
			t.Errorf("%s: %q, want error %d for id 1", c.body, a.body, c.code)
		}
	}
}

// TestNoListChanged: a stateless server has no stream to announce list
// changes on, so it does not advertise listChanged.
func TestNoListChanged(t *testing.T) {
	g := newGatehouse(t)
	cs := g.connect(t, g.key(t, "acme.com", tenancy.Developer), "")
	caps := cs.InitializeResult().Capabilities
	if caps.Tools == nil || caps.Tools.ListChanged || caps.Resources == nil || caps.Resources.ListChanged {
		b, _ := json.Marshal(caps)
		t.Errorf("capabilities %s advertise listChanged (or lack tools/resources)", b)
	}
}

// FuzzJSONRPCBody: whatever the body and Accept header, /mcp answers
// without a 5xx and without Go type names.
func FuzzJSONRPCBody(f *testing.F) {
	g := newGatehouse(f)
	key := g.key(f, "acme.com", tenancy.Developer)
	for _, b := range []string{pingCall, `{`, `[]`, `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}`,
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"loud"}}`, `{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":1,"result":{}}`, `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"gatehouse://nope"}}`} {
		f.Add(b, "application/json, text/event-stream")
	}
	f.Add(pingCall, "text/html;q=0.5, */*;q=0")
	f.Fuzz(func(t *testing.T, body, accept string) {
		accept = strings.Map(func(r rune) rune {
			if r < 0x20 || r >= 0x7f {
				return -1
			}
			return r
		}, accept)
		a := postAccept(t, g, key, body, accept)
		if a.status >= 500 {
			t.Fatalf("%q (Accept %q): %d %q", body, accept, a.status, a.body)
		}
		for _, leak := range goTypeLeaks {
			if strings.Contains(a.body, leak) && !strings.Contains(body, leak) {
				t.Fatalf("%q: the answer %q names %q", body, a.body, leak)
			}
		}
	})
}
