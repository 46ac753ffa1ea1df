package mcp

import (
	"fmt"
	"strings"
	"testing"
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
