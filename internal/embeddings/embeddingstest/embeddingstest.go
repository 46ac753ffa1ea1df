// Package embeddingstest is a local OpenAI-compatible embeddings endpoint
// for tests (the real providers are out of reach from tests). It follows
// the documented shapes of POST /v1/embeddings: input as a string or an
// array of strings, model, dimensions, encoding_format; the answer has
// object "list", data[] of {object "embedding", index, embedding}, model
// and usage {prompt_tokens, total_tokens}; errors are {"error": {message,
// type}} with their status.
//
// Its vectors are deterministic and related texts are close: each word
// (lower-cased, crudely stemmed) and each character trigram of it is hashed
// into one of the dimensions, the sum normalised. Texts sharing words have
// a high cosine similarity; texts sharing none are near orthogonal.
package embeddingstest

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"unicode"
)

// Server is the fake provider. Its fields may be set before requests.
type Server struct {
	*httptest.Server
	// Dimensions is the native vector size (used when a request has no
	// dimensions).
	Dimensions int
	// Key, when set, is the API key every request must carry.
	Key string

	mu       sync.Mutex
	requests []Request
	failures []Failure
}

// Request is what one request asked for.
type Request struct {
	Model      string
	Dimensions int
	Inputs     []string
}

// Failure is an answer to give instead of vectors.
type Failure struct {
	Status     int
	RetryAfter string // Retry-After header, if any
	Message    string
}

// New starts a fake provider with 256 native dimensions, closed when the
// test ends.
func New(t testing.TB) *Server {
	s := &Server{Dimensions: 256}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// BaseURL is the URL to configure (ending in /v1).
func (s *Server) BaseURL() string { return s.URL + "/v1" }

// FailNext makes the next requests fail, one failure each, in order.
func (s *Server) FailNext(fs ...Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, fs...)
}

// Requests returns the requests answered with vectors so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, typ, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": nil}})
	}
	if r.Method != http.MethodPost || r.URL.Path != "/v1/embeddings" {
		fail(http.StatusNotFound, "invalid_request_error", "Unknown request URL: "+r.Method+" "+r.URL.Path)
		return
	}
	if s.Key != "" && r.Header.Get("Authorization") != "Bearer "+s.Key {
		fail(http.StatusUnauthorized, "invalid_request_error", "Incorrect API key provided: "+strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")+".")
		return
	}
	var req struct {
		Input          json.RawMessage `json:"input"`
		Model          string          `json:"model"`
		Dimensions     int             `json:"dimensions"`
		EncodingFormat string          `json:"encoding_format"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		fail(http.StatusBadRequest, "invalid_request_error", "We could not parse the JSON body of your request.")
		return
	}
	var inputs []string
	var one string
	if json.Unmarshal(req.Input, &one) == nil {
		inputs = []string{one}
	} else if err := json.Unmarshal(req.Input, &inputs); err != nil || len(inputs) == 0 {
		fail(http.StatusBadRequest, "invalid_request_error", "'input' must be a non-empty string or array of strings")
		return
	}
	if req.Model == "" {
		fail(http.StatusBadRequest, "invalid_request_error", "you must provide a model parameter")
		return
	}
	if req.EncodingFormat != "" && req.EncodingFormat != "float" {
		fail(http.StatusBadRequest, "invalid_request_error", "encoding_format: only float here")
		return
	}
	s.mu.Lock()
	if len(s.failures) > 0 {
		f := s.failures[0]
		s.failures = s.failures[1:]
		s.mu.Unlock()
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		fail(f.Status, "server_error", f.Message)
		return
	}
	s.requests = append(s.requests, Request{Model: req.Model, Dimensions: req.Dimensions, Inputs: inputs})
	dims := s.Dimensions
	s.mu.Unlock()
	if req.Dimensions > 0 {
		dims = req.Dimensions
	}
	type item struct {
		Object    string    `json:"object"`
		Index     int       `json:"index"`
		Embedding []float64 `json:"embedding"`
	}
	data := make([]item, len(inputs))
	tokens := 0
	for i, in := range inputs {
		data[i] = item{Object: "embedding", Index: i, Embedding: Vector(req.Model+"\x00", in, dims)}
		tokens += len(strings.Fields(in))
	}
	// Answer in reverse order: clients must place vectors by index.
	for i, j := 0, len(data)-1; i < j; i, j = i+1, j-1 {
		data[i], data[j] = data[j], data[i]
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": data, "model": req.Model,
		"usage": map[string]int{"prompt_tokens": tokens, "total_tokens": tokens}})
}

// Vector is the fake's embedding of text in dims dimensions; seed (the
// model) changes every vector, so two models' vectors do not compare.
func Vector(seed, text string, dims int) []float64 {
	v := make([]float64, dims)
	add := func(s string, w float64) {
		h := fnv.New64a()
		h.Write([]byte(seed))
		h.Write([]byte(s))
		x := h.Sum64()
		sign := 1.0
		if x>>63 == 1 {
			sign = -1
		}
		v[int(x%uint64(dims))] += sign * w
	}
	for _, word := range strings.FieldsFunc(strings.ToLower(text), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }) {
		word = stem(word)
		if len(word) < 3 || stopWords[word] {
			continue
		}
		add("w:"+word, 1)
		for i := 0; i+3 <= len(word); i++ {
			add("t:"+word[i:i+3], 0.3)
		}
	}
	var n float64
	for _, x := range v {
		n += x * x
	}
	if n == 0 {
		v[0] = 1 // a text of no words still has a direction
		return v
	}
	n = math.Sqrt(n)
	for i := range v {
		v[i] /= n
	}
	return v
}

func stem(w string) string {
	for _, suf := range []string{"ing", "ed", "es", "s"} {
		if len(w) > len(suf)+3 && strings.HasSuffix(w, suf) {
			return w[:len(w)-len(suf)]
		}
	}
	return w
}

var stopWords = map[string]bool{"the": true, "and": true, "for": true, "with": true, "that": true, "this": true, "are": true, "was": true, "how": true, "what": true, "our": true, "you": true, "your": true}

// String describes the server for test logs.
func (s *Server) String() string { return fmt.Sprintf("fake embeddings at %s", s.BaseURL()) }
