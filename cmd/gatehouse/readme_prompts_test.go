package main

import (
	"os"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/mcp"
)

// TestREADMEListsEveryPrompt keeps README's prompt table in step with the
// registry.
func TestREADMEListsEveryPrompt(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for name, rule := range mcp.PromptNames() {
		row := "| `" + name + "` | " + string(rule.Role) + " | `" + rule.Scope + "` |"
		if !strings.Contains(string(b), row) {
			t.Errorf("README.md's prompt table lacks %s", row)
		}
	}
}
