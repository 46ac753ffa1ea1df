package embeddingstest_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/internal/embeddings/embeddingstest"
)

// TestShapes: the fake answers OpenAI's documented shapes: input as one
// string or an array, dimensions honoured, data[] with object, index and
// embedding, usage; errors as {"error": {message, type}}.
func TestShapes(t *testing.T) {
	fake := embeddingstest.New(t)
	post := func(body string) (int, map[string]any) {
		res, err := http.Post(fake.BaseURL()+"/embeddings", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var v map[string]any
		if err := json.NewDecoder(res.Body).Decode(&v); err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, v
	}
	code, v := post(`{"input": "one text", "model": "m", "dimensions": 16}`)
	data, _ := v["data"].([]any)
	if code != 200 || v["object"] != "list" || len(data) != 1 || v["usage"] == nil {
		t.Fatalf("string input: %d %v", code, v)
	}
	item := data[0].(map[string]any)
	if item["object"] != "embedding" || item["index"] != 0.0 || len(item["embedding"].([]any)) != 16 {
		t.Errorf("item: %v", item)
	}
	if code, v := post(`{"input": ["a", "b"], "model": "m"}`); code != 200 || len(v["data"].([]any)) != 2 {
		t.Errorf("array input: %d %v", code, v)
	}
	for _, bad := range []string{`{"model": "m"}`, `{"input": "x"}`, `{"input": [], "model": "m"}`, `not json`} {
		if code, v := post(bad); code != 400 || v["error"].(map[string]any)["message"] == "" {
			t.Errorf("%s: %d %v", bad, code, v)
		}
	}
	if got, want := len(fake.Requests()), 2; got != want {
		t.Errorf("%d requests recorded, want %d", got, want)
	}
}
