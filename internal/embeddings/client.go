package embeddings

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Config says which provider and model to use.
type Config struct {
	// URL is the API's base URL (https://api.openai.com/v1,
	// http://localhost:11434/v1 for Ollama); "/embeddings" is appended
	// unless it already ends so.
	URL   string
	Model string
	// Dimensions, when > 0, is sent as "dimensions" and every vector must
	// have that many; 0 sends none and takes the model's own size, which
	// must then be the same in every answer.
	Dimensions int
	// APIKey, when set, is sent as "Authorization: Bearer <key>". Secret.
	APIKey string
	// HTTPClient defaults to a client with a 60 s timeout.
	HTTPClient *http.Client
}

// MaxBatch is the most inputs sent in one request (OpenAI accepts 2048;
// local servers are often configured for fewer).
const MaxBatch = 64

// Client calls one embeddings endpoint.
type Client struct {
	cfg      Config
	endpoint string
	http     *http.Client
}

// New checks cfg and returns a client.
func New(cfg Config) (*Client, error) {
	switch {
	case cfg.URL == "":
		return nil, errors.New("embeddings: URL is required")
	case cfg.Model == "":
		return nil, errors.New("embeddings: model is required")
	case cfg.Dimensions < 0:
		return nil, errors.New("embeddings: dimensions must be positive")
	}
	if !strings.HasPrefix(cfg.URL, "http://") && !strings.HasPrefix(cfg.URL, "https://") {
		return nil, fmt.Errorf("embeddings: URL %q is not an http(s) URL", cfg.URL)
	}
	c := &Client{cfg: cfg, http: cfg.HTTPClient, endpoint: strings.TrimSuffix(cfg.URL, "/")}
	if !strings.HasSuffix(c.endpoint, "/embeddings") {
		c.endpoint += "/embeddings"
	}
	if c.http == nil {
		c.http = &http.Client{Timeout: 60 * time.Second}
	}
	return c, nil
}

// Model is the setting vectors are made with: the model's name, and
// "@dimensions" when dimensions are configured. Vectors made with another
// setting are not comparable; documents embedded with one are embedded
// again.
func (c *Client) Model() string {
	if c.cfg.Dimensions > 0 {
		return c.cfg.Model + "@" + strconv.Itoa(c.cfg.Dimensions)
	}
	return c.cfg.Model
}

// Dimensions is the configured vector size; 0: the model's own.
func (c *Client) Dimensions() int { return c.cfg.Dimensions }

// Endpoint is the URL requests go to (no secret in it).
func (c *Client) Endpoint() string { return c.endpoint }

// Error is a failed request. Retryable errors (rate limited, provider
// errors, network) may succeed later; the others will not until the
// configuration or the input changes.
type Error struct {
	Status     int // HTTP status; 0: no answer
	Retryable  bool
	RetryAfter time.Duration // the provider's Retry-After, if any
	Msg        string        // safe to log and show: no key in it
}

// Public is what a tenant's user may be told: whether the provider
// answered, and its HTTP status, without its message or the provider's
// address (operators find those in the log: Error).
func (e *Error) Public() string {
	if e.Status == 0 {
		return "the embeddings provider could not be reached"
	}
	return fmt.Sprintf("the embeddings provider answered HTTP %d", e.Status)
}

func (e *Error) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("embeddings provider answered %d: %s", e.Status, e.Msg)
	}
	return "embeddings provider: " + e.Msg
}

type request struct {
	Input          []string `json:"input"`
	Model          string   `json:"model"`
	Dimensions     int      `json:"dimensions,omitempty"`
	EncodingFormat string   `json:"encoding_format"`
}

type response struct {
	Data []struct {
		Index     int       `json:"index"`
		Embedding []float64 `json:"embedding"`
	} `json:"data"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// Embed returns one unit-length vector per input, in order. inputs must
// hold 1 to MaxBatch strings. Errors are *Error (or the context's).
func (c *Client) Embed(ctx context.Context, inputs []string) ([][]float32, error) {
	if len(inputs) == 0 || len(inputs) > MaxBatch {
		return nil, fmt.Errorf("embeddings: %d inputs; send 1 to %d", len(inputs), MaxBatch)
	}
	body, err := json.Marshal(request{Input: inputs, Model: c.cfg.Model, Dimensions: c.cfg.Dimensions, EncodingFormat: "float"})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.APIKey)
	}
	res, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &Error{Retryable: true, Msg: c.clean(errors.Unwrap(err), "no answer")}
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return nil, &Error{Status: res.StatusCode, Retryable: true, Msg: "reading the answer: " + c.clean(err, "")}
	}
	var out response
	jerr := json.Unmarshal(raw, &out)
	if res.StatusCode != http.StatusOK {
		e := &Error{Status: res.StatusCode, RetryAfter: retryAfter(res.Header.Get("Retry-After"))}
		e.Retryable = res.StatusCode == http.StatusTooManyRequests || res.StatusCode == http.StatusRequestTimeout || res.StatusCode >= 500
		e.Msg = http.StatusText(res.StatusCode)
		if jerr == nil && out.Error != nil && out.Error.Message != "" {
			e.Msg = c.clean(errors.New(out.Error.Message), e.Msg)
		}
		return nil, e
	}
	if jerr != nil {
		return nil, &Error{Status: res.StatusCode, Msg: "the answer is not the embeddings JSON (data[].embedding)"}
	}
	return c.vectors(inputs, &out)
}

// vectors checks the answer (one vector per input, each index once, the
// same size) and normalises each vector to unit length.
func (c *Client) vectors(inputs []string, out *response) ([][]float32, error) {
	bad := func(format string, args ...any) error {
		return &Error{Status: http.StatusOK, Msg: fmt.Sprintf(format, args...)}
	}
	if len(out.Data) != len(inputs) {
		return nil, bad("%d vectors for %d inputs", len(out.Data), len(inputs))
	}
	vs := make([][]float32, len(inputs))
	want := c.cfg.Dimensions
	for _, d := range out.Data {
		if d.Index < 0 || d.Index >= len(inputs) || vs[d.Index] != nil {
			return nil, bad("data[].index %d is out of range or repeated", d.Index)
		}
		if want == 0 {
			want = len(d.Embedding)
		}
		if len(d.Embedding) != want || want == 0 {
			return nil, bad("a vector has %d dimensions, want %d", len(d.Embedding), want)
		}
		var norm float64
		for _, x := range d.Embedding {
			norm += x * x
		}
		norm = math.Sqrt(norm)
		if norm == 0 || math.IsNaN(norm) || math.IsInf(norm, 0) {
			return nil, bad("vector %d has no direction (zero, NaN or infinite)", d.Index)
		}
		v := make([]float32, len(d.Embedding))
		for i, x := range d.Embedding {
			v[i] = float32(x / norm)
		}
		vs[d.Index] = v
	}
	return vs, nil
}

// clean makes an error's text safe to store and show: the API key removed
// wherever it appears, at most 300 characters of valid UTF-8 on one line.
func (c *Client) clean(err error, fallback string) string {
	if err == nil {
		return fallback
	}
	s := err.Error()
	if c.cfg.APIKey != "" {
		s = strings.ReplaceAll(s, c.cfg.APIKey, "[key]")
	}
	s = strings.Join(strings.Fields(strings.ToValidUTF8(s, "?")), " ")
	if utf8.RuneCountInString(s) > 300 {
		s = string([]rune(s)[:300]) + "…"
	}
	if s == "" {
		return fallback
	}
	return s
}

// retryAfter reads a Retry-After header in seconds (RFC 9110 §10.2.3; the
// HTTP-date form is taken as absent).
func retryAfter(h string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(h))
	if err != nil || n < 0 {
		return 0
	}
	return min(time.Duration(n)*time.Second, time.Hour)
}
