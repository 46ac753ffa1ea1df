package mcp

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestCheckTextEveryEscape: every unpaired surrogate escape and NUL is
// refused (upper or lower case, anywhere, in keys and nested values); a
// paired surrogate, an escaped backslash before such text, and plain text
// pass.
func TestCheckTextEveryEscape(t *testing.T) {
	for r := 0xD800; r <= 0xDFFF; r += 0x80 {
		for _, esc := range []string{fmt.Sprintf(`\u%04x`, r), fmt.Sprintf(`\u%04X`, r)} {
			for _, doc := range []string{`{"a":"%s"}`, `{"a":["x","y%s"]}`, `{"a":{"b":"%s z"}}`, `{"%s":1}`} {
				raw := fmt.Sprintf(doc, esc)
				if err := checkText([]byte(raw)); err == nil || !strings.Contains(err.Error(), "surrogate") {
					t.Errorf("%s: %v, want an unpaired surrogate refused", raw, err)
				}
			}
		}
	}
	for raw, want := range map[string]string{
		`{"a":"\u0000"}`:                 "a must not contain the NUL character",
		`{"a":[1,{"b":["x","\u0000"]}]}`: "a[1].b[1] must not contain the NUL character",
		"{\"a\":\"\xff\"}":               "a must be valid UTF-8",
		`{"a":"\ud83d"}`:                 "a contains an unpaired UTF-16 surrogate (\\uD83D)",
		`{"a":"\ude00\ud83d"}`:           "unpaired",
	} {
		if err := checkText([]byte(raw)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", raw, err, want)
		}
	}
	for _, raw := range []string{`{"a":"\ud83d\ude00"}`, `{"a":"\\u0000 is how you write NUL"}`, `{"a":"\\ud800"}`, `{"a":"plain é 😀","b":[1,2]}`} {
		if err := checkText([]byte(raw)); err != nil {
			t.Errorf("%s: %v, want it to pass", raw, err)
		}
	}
}

// FuzzCheckText: checkText never panics, and what it lets through decodes
// to text PostgreSQL stores as sent: no NUL, and no U+FFFD that the bytes
// did not hold (encoding/json's stand-in for an unpaired surrogate).
func FuzzCheckText(f *testing.F) {
	for _, s := range []string{`{"a":"x"}`, `{"a":"\u0000"}`, `{"a":"\ud800"}`, `{"a":["\udc00",{"b":"\ud83d\ude00"}]}`, "{\"a\":\"\xff\"}",
		`{"a":"\\u0000"}`, `{"\u0000":1}`, `{"a":"\uFFFD"}`, `[1,"\ud800\ud800"]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		err := checkText(raw)
		var v any
		if err != nil || json.Unmarshal(raw, &v) != nil {
			return
		}
		if !utf8.Valid(raw) {
			t.Fatalf("%q: invalid UTF-8 let through", raw)
		}
		allowed := strings.Count(string(raw), "\uFFFD") + strings.Count(strings.ToLower(string(raw)), `\ufffd`)
		found := 0
		var walk func(any)
		walk = func(v any) {
			switch x := v.(type) {
			case string:
				if strings.Contains(x, "\x00") {
					t.Fatalf("%q: NUL let through", raw)
				}
				found += strings.Count(x, "\uFFFD")
			case []any:
				for _, e := range x {
					walk(e)
				}
			case map[string]any:
				for k, e := range x {
					walk(k)
					walk(e)
				}
			}
		}
		walk(v)
		if found > allowed {
			t.Fatalf("%q: decodes to %d U+FFFD, the bytes hold %d: a surrogate was let through", raw, found, allowed)
		}
	})
}

// FuzzCheckBody: checkBody never panics, answers a request it refuses
// with 200 only under the request's id, and its messages name no Go types.
func FuzzCheckBody(f *testing.F) {
	for _, s := range []string{`{"jsonrpc":"2.0","id":1,"method":"ping"}`, `{`, `[]`, `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}`, `{"jsonrpc":"2.0","id":"x","method":"logging/setLevel","params":{"level":"loud"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"capabilities":[]}}`, `{"jsonrpc":"2.0","method":"foo"}`} {
		f.Add([]byte(s), "2025-06-18")
	}
	f.Fuzz(func(t *testing.T, body []byte, version string) {
		rej := checkBody(body, version)
		if rej == nil {
			return
		}
		if rej.status == 200 && len(rej.id) == 0 {
			t.Fatalf("%q: a 200 error without the request's id", body)
		}
		for _, leak := range []string{"Go value", "Go struct", "jsonrpc2.", "mcp.", "reflect", "map[", "interface {"} {
			if strings.Contains(rej.msg, leak) {
				t.Fatalf("%q: message %q names %q", body, rej.msg, leak)
			}
		}
	})
}
