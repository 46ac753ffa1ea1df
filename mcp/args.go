package mcp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/google/jsonschema-go/jsonschema"
)

// Every tool's arguments pass the same checks before its handler runs
// (Tool.validate): the tool's JSON schema, and the rules below, which no
// schema can say but PostgreSQL enforces, so that any input gets a tool
// error naming the argument and the rule rather than a database error.
//
//   - Text must be storable: no NUL (PostgreSQL text cannot hold it), valid
//     UTF-8, no unpaired UTF-16 surrogate escapes (encoding/json would
//     silently replace them, storing something the caller did not send).
//   - Every string, array and number is bounded (boundSchema gives a bound
//     to any the tool left open), so no value is too long to store or out of
//     range of the column it lands in.

// Default bounds for values a tool's schema leaves open.
const (
	defaultMaxLength = 1000
	defaultMaxItems  = 100
	maxInteger       = math.MaxInt32 // integer columns are int4
)

// boundSchema gives every string, array and number in s a bound when it
// has none.
func boundSchema(s *jsonschema.Schema) {
	if s == nil {
		return
	}
	switch s.Type {
	case "string":
		if s.MaxLength == nil && s.Enum == nil && s.Pattern == "" {
			s.MaxLength = new(defaultMaxLength)
		}
	case "array":
		if s.MaxItems == nil {
			s.MaxItems = new(defaultMaxItems)
		}
	case "integer", "number":
		if s.Minimum == nil && s.ExclusiveMinimum == nil {
			s.Minimum = new(float64(-maxInteger))
		}
		if s.Maximum == nil && s.ExclusiveMaximum == nil {
			s.Maximum = new(float64(maxInteger))
		}
	}
	for _, p := range s.Properties {
		boundSchema(p)
	}
	boundSchema(s.Items)
}

// checkText walks the arguments' JSON and refuses the first string (key or
// value) that PostgreSQL could not store or that decoding would alter,
// naming it by its path (title, tags[2]).
func checkText(raw []byte) error {
	if utf8.Valid(raw) && !suspectEscape(raw) {
		return nil // the common case, without walking the JSON
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	type frame struct {
		obj       bool
		expectKey bool
		key       string
		idx       int
	}
	var stack []*frame
	path := func() string {
		var b []byte
		for _, f := range stack {
			if f.obj {
				if len(b) > 0 {
					b = append(b, '.')
				}
				b = append(b, f.key...)
			} else {
				b = strconv.AppendInt(append(b, '['), int64(f.idx), 10)
				b = append(b, ']')
			}
		}
		if len(b) == 0 {
			return "the arguments"
		}
		return string(b)
	}
	afterValue := func() {
		if n := len(stack); n > 0 {
			if top := stack[n-1]; top.obj {
				top.expectKey = true
			} else {
				top.idx++
			}
		}
	}
	prev := int64(0)
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // end of input; syntax errors are reported by the decoder elsewhere
		}
		end := dec.InputOffset()
		lit := raw[prev:end]
		prev = end
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				stack = append(stack, &frame{obj: true, expectKey: true})
			case '[':
				stack = append(stack, &frame{})
			default:
				stack = stack[:len(stack)-1]
				afterValue()
			}
		case string:
			top := (*frame)(nil)
			if len(stack) > 0 {
				top = stack[len(stack)-1]
			}
			if top != nil && top.obj && top.expectKey {
				if err := checkLiteral(lit); err != nil {
					return invalidArgs(fmt.Sprintf("the property name %q %s", truncate(v, 40), err))
				}
				top.key, top.expectKey = v, false
				continue
			}
			if err := checkLiteral(lit); err != nil {
				return invalidArgs(path() + " " + err.Error())
			}
			afterValue()
		default:
			afterValue()
		}
	}
}

// suspectEscape reports whether raw may hold a \u0000 or a surrogate
// escape (\uD800-\uDFFF); false positives (an escaped backslash before
// such text) only send checkText down its exact path.
func suspectEscape(raw []byte) bool {
	for i := 0; i+5 < len(raw); i++ {
		if raw[i] != '\\' || raw[i+1] != 'u' {
			continue
		}
		h := raw[i+2 : i+6]
		if string(h) == "0000" || ((h[0] == 'd' || h[0] == 'D') && bytes.IndexByte([]byte("89abcdefABCDEF"), h[1]) >= 0) {
			return true
		}
	}
	return false
}

// textRule is a broken rule of checkText, worded to follow the argument's
// name.
type textRule string

func (r textRule) Error() string { return string(r) }

// errNULText is checkText's rule against NUL.
const errNULText = textRule(`must not contain the NUL character (\u0000)`)

// checkLiteral checks the JSON string literal in b (which may start with
// separators and whitespace before the opening quote).
func checkLiteral(b []byte) error {
	start := bytes.IndexByte(b, '"')
	if start < 0 || len(b)-start < 2 {
		return nil
	}
	b = b[start+1 : len(b)-1]
	if !utf8.Valid(b) {
		return textRule("must be valid UTF-8 text")
	}
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' || i+1 >= len(b) {
			continue
		}
		r, ok := rune(0), false
		if b[i+1] == 'u' {
			r, ok = hex4(b[i+2:])
		}
		if !ok {
			i++ // an escape other than \uXXXX
			continue
		}
		i += 5 // the last hex digit
		switch {
		case r == 0:
			return errNULText
		case r >= 0xD800 && r <= 0xDBFF:
			if i+6 < len(b) && b[i+1] == '\\' && b[i+2] == 'u' {
				if lo, ok := hex4(b[i+3:]); ok && lo >= 0xDC00 && lo <= 0xDFFF {
					i += 6
					continue
				}
			}
			fallthrough
		case r >= 0xDC00 && r <= 0xDFFF:
			return textRule(fmt.Sprintf(`contains an unpaired UTF-16 surrogate (\u%04X); send valid Unicode text`, r))
		}
	}
	return nil
}

// hex4 reads four hex digits.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b[:4]), 16, 32)
	return rune(n), err == nil
}

// explain says, in plain words, which argument breaks which rule of s (a
// tool's input schema, of the keywords Gatehouse's schemas use), without
// repeating the value: v is the decoded arguments. It returns "" when it
// finds nothing (the caller then falls back to the validator's message).
func explain(s *jsonschema.Schema, v any, name string) string {
	if s == nil {
		return ""
	}
	if want := s.Type; want != "" && !hasType(v, want) {
		return fmt.Sprintf("%s must be %s, not %s", name, article(want), jsonKind(v))
	}
	switch x := v.(type) {
	case map[string]any:
		for _, k := range sortedKeys(x) {
			p, known := s.Properties[k]
			if !known {
				if s.AdditionalProperties != nil && s.AdditionalProperties.Not != nil {
					return fmt.Sprintf("%s has no property %q (property names are case-sensitive)", nameOr(name, "the tool"), truncate(k, 40))
				}
				continue
			}
			if msg := explain(p, x[k], join(name, k)); msg != "" {
				return msg
			}
		}
		for _, req := range s.Required {
			if _, ok := x[req]; !ok {
				return fmt.Sprintf("%s is required", join(name, req))
			}
		}
	case []any:
		if s.MinItems != nil && len(x) < *s.MinItems {
			return fmt.Sprintf("%s must have at least %d items", name, *s.MinItems)
		}
		if s.MaxItems != nil && len(x) > *s.MaxItems {
			return fmt.Sprintf("%s must have at most %d items (got %d)", name, *s.MaxItems, len(x))
		}
		for i, e := range x {
			if msg := explain(s.Items, e, fmt.Sprintf("%s[%d]", name, i)); msg != "" {
				return msg
			}
		}
	case string:
		n := utf8.RuneCountInString(x)
		if s.MinLength != nil && n < *s.MinLength {
			if *s.MinLength == 1 {
				return fmt.Sprintf("%s must not be empty", name)
			}
			return fmt.Sprintf("%s must be at least %d characters", name, *s.MinLength)
		}
		if s.MaxLength != nil && n > *s.MaxLength {
			return fmt.Sprintf("%s must be at most %d characters (got %d)", name, *s.MaxLength, n)
		}
		if len(s.Enum) > 0 && !slices.Contains(s.Enum, any(x)) {
			return fmt.Sprintf("%s must be one of %s", name, enumList(s.Enum))
		}
		if s.Pattern != "" {
			if re, err := regexp.Compile(s.Pattern); err == nil && !re.MatchString(x) {
				if s.Format == "date" {
					return fmt.Sprintf("%s must be a date as YYYY-MM-DD, such as 2026-12-01", name)
				}
				return fmt.Sprintf("%s must match the pattern %s", name, s.Pattern)
			}
		}
	case float64:
		if s.Minimum != nil && x < *s.Minimum {
			return fmt.Sprintf("%s must be at least %s", name, strconv.FormatFloat(*s.Minimum, 'f', -1, 64))
		}
		if s.Maximum != nil && x > *s.Maximum {
			return fmt.Sprintf("%s must be at most %s", name, strconv.FormatFloat(*s.Maximum, 'f', -1, 64))
		}
	}
	return ""
}

func hasType(v any, t string) bool {
	switch t {
	case "integer":
		f, ok := v.(float64)
		return ok && f == math.Trunc(f) && !math.IsInf(f, 0)
	case "number":
		_, ok := v.(float64)
		return ok
	}
	return jsonKind(v) == article(t)
}

// jsonKind names the JSON type of a decoded value, with its article.
func jsonKind(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case float64:
		if x == math.Trunc(x) {
			return "an integer"
		}
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return "a value"
}

func article(t string) string {
	switch t {
	case "integer", "object", "array":
		return "an " + t
	case "null":
		return t
	}
	return "a " + t
}

func join(name, key string) string {
	if name == "" {
		return key
	}
	return name + "." + key
}

func nameOr(name, alt string) string {
	if name == "" {
		return alt
	}
	return name
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func enumList(vals []any) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = fmt.Sprint(v)
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " or " + parts[len(parts)-1]
}
