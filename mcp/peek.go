package mcp

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
)

// peekPrefix is how much of a body peek reads: the id and method of a
// JSON-RPC request come first in practice, its arguments last.
const peekPrefix = 64 << 10

// peek reads a request's JSON-RPC id (null when it has none or is a
// batch), its method, and what it asks for (the tool's name for
// tools/call, else the method), from the first peekPrefix bytes of the
// body, leaving the whole body readable. It decodes nothing it does not
// need: a refused request costs no JSON decoding of its arguments.
func peek(r *http.Request) (id json.RawMessage, method, what string) {
	id = json.RawMessage("null")
	if r.Body == nil {
		return id, "", ""
	}
	var buf []byte
	var err error
	if n := r.ContentLength; n > 0 && n <= peekPrefix {
		buf = make([]byte, n) // the usual case: one allocation of the body's size
		var got int
		got, err = io.ReadFull(r.Body, buf)
		buf = buf[:got]
	} else {
		buf, err = io.ReadAll(io.LimitReader(r.Body, peekPrefix))
	}
	if err == nil && int64(len(buf)) != r.ContentLength { // more may follow
		r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	} else {
		r.Body = readCloser{bytes.NewReader(buf), r.Body}
	}
	rawID, method, name := scanRequest(buf)
	if rawID != nil && json.Valid(rawID) {
		id = rawID
	}
	method = truncate(method, 64)
	if method == "tools/call" {
		return id, method, truncate(name, 64)
	}
	return id, method, method
}

type readCloser struct {
	io.Reader
	io.Closer
}

// scanRequest finds the top-level "id" (raw), "method" and params.name of
// a JSON object, or what of them lies in b (which may be cut short).
func scanRequest(b []byte) (id json.RawMessage, method, name string) {
	sc := scanner{b: b}
	sc.object(func(key []byte) bool {
		switch string(key) {
		case "id":
			sc.ws()
			start := sc.i
			if !sc.value() {
				return false
			}
			id = json.RawMessage(b[start:sc.i])
			return true
		case "method":
			var ok bool
			method, ok = sc.str()
			return ok
		case "params":
			sc.ws()
			if sc.i < len(b) && b[sc.i] == '{' {
				return sc.object(func(key []byte) bool {
					if string(key) == "name" {
						name, _ = sc.str()
						return true
					}
					return sc.value()
				})
			}
			return sc.value()
		}
		return sc.value()
	})
	return id, method, name
}

// scanner walks JSON just enough to find keys; anything malformed or cut
// short ends the walk (false).
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\n' || s.b[s.i] == '\r') {
		s.i++
	}
}

// object walks {"key": value, …}, calling member with the cursor at each
// value; member must consume the value.
func (s *scanner) object(member func(key []byte) bool) bool {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return false
	}
	s.i++
	for {
		s.ws()
		if s.i >= len(s.b) {
			return false
		}
		if s.b[s.i] == '}' {
			s.i++
			return true
		}
		key, ok := s.strBytes()
		if !ok {
			return false
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return false
		}
		s.i++
		if !member(key) {
			return false
		}
		s.ws()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// str reads a string value (decoding escapes only when there are any).
func (s *scanner) str() (string, bool) {
	b, ok := s.strBytes()
	return string(b), ok
}

// strBytes reads a string value: its bytes within b when it has no
// escapes (no allocation: keys are compared, not kept), else decoded.
func (s *scanner) strBytes() ([]byte, bool) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	start := s.i
	escaped := false
	for s.i++; s.i < len(s.b); s.i++ {
		switch s.b[s.i] {
		case '\\':
			escaped = true
			s.i++
		case '"':
			s.i++
			raw := s.b[start:s.i]
			if !escaped {
				return raw[1 : len(raw)-1], true
			}
			var v string
			if json.Unmarshal(raw, &v) != nil {
				return nil, false
			}
			return []byte(v), true
		}
	}
	return nil, false
}

// value skips one value of any kind.
func (s *scanner) value() bool {
	s.ws()
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"':
		_, ok := s.strBytes()
		return ok
	case '{', '[':
		depth := 0
		for ; s.i < len(s.b); s.i++ {
			switch s.b[s.i] {
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					s.i++
					return true
				}
			case '"':
				if _, ok := s.strBytes(); !ok {
					return false
				}
				s.i--
			}
		}
		return false
	}
	start := s.i
	for ; s.i < len(s.b); s.i++ {
		switch s.b[s.i] {
		case ',', ' ', '\t', '\r', '\n', '}', ']':
			return s.i > start
		}
	}
	return false // cut short
}
