package embeddings_test

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/embeddings"
	"github.com/gatehouse-mcp/gatehouse/internal/embeddings/embeddingstest"
)

func dot(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i] * b[i])
	}
	return s
}

// TestEmbed: vectors come back in input order (the fake answers in
// reverse), unit length, related texts closer than unrelated ones; the
// request carries the model, dimensions and key.
func TestEmbed(t *testing.T) {
	fake := embeddingstest.New(t)
	fake.Key = "sk-test-secret-key"
	c, err := embeddings.New(embeddings.Config{URL: fake.BaseURL(), Model: "text-embedding-3-small", Dimensions: 64, APIKey: fake.Key})
	if err != nil {
		t.Fatal(err)
	}
	vs, err := c.Embed(context.Background(), []string{"deploying the web server", "server deployment checklist", "banana bread recipe"})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vs {
		if len(v) != 64 || math.Abs(dot(v, v)-1) > 1e-5 {
			t.Errorf("vector %d: %d dims, norm² %v", i, len(v), dot(v, v))
		}
	}
	if near, far := dot(vs[0], vs[1]), dot(vs[0], vs[2]); near <= far+0.2 {
		t.Errorf("related texts %.2f not closer than unrelated ones %.2f", near, far)
	}
	reqs := fake.Requests()
	if len(reqs) != 1 || reqs[0].Model != "text-embedding-3-small" || reqs[0].Dimensions != 64 || len(reqs[0].Inputs) != 3 {
		t.Errorf("requests: %+v", reqs)
	}
	if c.Model() != "text-embedding-3-small@64" {
		t.Errorf("Model() = %q", c.Model())
	}
}

// TestEmbedErrors: rate limits and provider errors are retryable (with the
// provider's Retry-After), client errors are not, and no error shows the
// API key even when the provider echoes it.
func TestEmbedErrors(t *testing.T) {
	fake := embeddingstest.New(t)
	fake.Key = "sk-right-key-0123456789"
	ctx := context.Background()
	wrong, _ := embeddings.New(embeddings.Config{URL: fake.BaseURL(), Model: "m", APIKey: "sk-wrong-key-0123456789"})
	_, err := wrong.Embed(ctx, []string{"x"})
	var e *embeddings.Error
	if !errors.As(err, &e) || e.Status != 401 || e.Retryable || strings.Contains(err.Error(), "sk-wrong") || !strings.Contains(err.Error(), "[key]") {
		t.Errorf("wrong key: %v", err)
	}
	c, _ := embeddings.New(embeddings.Config{URL: fake.BaseURL() + "/embeddings", Model: "m", APIKey: fake.Key})
	fake.FailNext(embeddingstest.Failure{Status: 429, RetryAfter: "7", Message: "Rate limit reached"},
		embeddingstest.Failure{Status: 500, Message: "The server had an error"},
		embeddingstest.Failure{Status: 400, Message: "This model's maximum context length is 8192 tokens"})
	for _, want := range []struct {
		status    int
		retryable bool
		after     time.Duration
	}{{429, true, 7 * time.Second}, {500, true, 0}, {400, false, 0}} {
		_, err := c.Embed(ctx, []string{"x"})
		if !errors.As(err, &e) || e.Status != want.status || e.Retryable != want.retryable || e.RetryAfter != want.after {
			t.Errorf("want %d: %v %+v", want.status, err, e)
		}
	}
	if _, err := c.Embed(ctx, []string{"x"}); err != nil {
		t.Errorf("after the failures: %v", err)
	}
	fixed, _ := embeddings.New(embeddings.Config{URL: fake.BaseURL(), Model: "m", APIKey: fake.Key, Dimensions: 8})
	fake.Dimensions = 8
	if _, err := fixed.Embed(ctx, []string{"x"}); err != nil {
		t.Errorf("dimensions 8: %v", err)
	}
	down, _ := embeddings.New(embeddings.Config{URL: "http://127.0.0.1:1/v1", Model: "m"})
	if _, err := down.Embed(ctx, []string{"x"}); !errors.As(err, &e) || !e.Retryable {
		t.Errorf("provider down: %v", err)
	}
	if _, err := embeddings.New(embeddings.Config{URL: "ftp://x", Model: "m"}); err == nil {
		t.Error("ftp URL accepted")
	}
}

// TestEmbedRefusesBadAnswers: an answer that is not one unit-able vector
// per input, of one size, is an error (not retried: the provider would
// answer the same), never vectors in the wrong places.
func TestEmbedRefusesBadAnswers(t *testing.T) {
	for name, body := range map[string]string{
		"fewer vectors":    `{"data": [{"index": 0, "embedding": [1, 0]}]}`,
		"repeated index":   `{"data": [{"index": 0, "embedding": [1, 0]}, {"index": 0, "embedding": [0, 1]}]}`,
		"index past end":   `{"data": [{"index": 0, "embedding": [1, 0]}, {"index": 2, "embedding": [0, 1]}]}`,
		"sizes differ":     `{"data": [{"index": 0, "embedding": [1, 0]}, {"index": 1, "embedding": [0, 1, 0]}]}`,
		"zero vector":      `{"data": [{"index": 0, "embedding": [0, 0]}, {"index": 1, "embedding": [0, 1]}]}`,
		"empty vector":     `{"data": [{"index": 0, "embedding": []}, {"index": 1, "embedding": []}]}`,
		"not JSON":         `<html>gateway</html>`,
		"base64 embedding": `{"data": [{"index": 0, "embedding": "AAAA"}, {"index": 1, "embedding": "AAAA"}]}`,
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) }))
		c, _ := embeddings.New(embeddings.Config{URL: srv.URL, Model: "m"})
		vs, err := c.Embed(context.Background(), []string{"a", "b"})
		var e *embeddings.Error
		if !errors.As(err, &e) || e.Retryable || vs != nil {
			t.Errorf("%s: %v %v", name, vs, err)
		}
		srv.Close()
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"data": [{"index": 0, "embedding": [1, 0, 0]}]}`)
	}))
	defer srv.Close()
	c, _ := embeddings.New(embeddings.Config{URL: srv.URL, Model: "m", Dimensions: 2})
	if _, err := c.Embed(context.Background(), []string{"a"}); err == nil || !strings.Contains(err.Error(), "3 dimensions, want 2") {
		t.Errorf("dimensions other than configured: %v", err)
	}
}
