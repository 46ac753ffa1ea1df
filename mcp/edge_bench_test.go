package mcp

import (
	"encoding/json"
	"testing"
)

// BenchmarkEdgeChecks measures what edge.go and the argument rules add to
// each tools/call: the JSON-RPC check of the body (checkBody), and the
// text rules on the arguments (checkText) next to the whole argument
// validation (validate: text rules and the schema). Compare with
// BenchmarkToolCall's gatehouse figures, run alongside.
func BenchmarkEdgeChecks(b *testing.B) {
	body := []byte(`{"jsonrpc":"2.0","id":17,"method":"tools/call","params":{"name":"add_todo","arguments":{"title":"bench todo","notes":"some notes about it","priority":"high","due_on":"2026-12-01"}}}`)
	var add *Tool
	for _, t := range tools() {
		if t.Name == "add_todo" {
			add = t
		}
	}
	var msg struct {
		Params struct {
			Arguments json.RawMessage `json:"arguments"`
		} `json:"params"`
	}
	_ = json.Unmarshal(body, &msg)
	args := msg.Params.Arguments
	b.Run("checkBody", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if rej := checkBody(body, "2025-06-18"); rej != nil {
				b.Fatal(rej.msg)
			}
		}
	})
	b.Run("checkText", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := checkText(args); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("validate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := add.validate(args); err != nil {
				b.Fatal(err)
			}
		}
	})
}
