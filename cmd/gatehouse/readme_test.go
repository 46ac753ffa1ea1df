package main

import (
	"os"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/mcp"
)

// TestREADMEDocumentsEveryVariable keeps README's table in step with envVars.
func TestREADMEDocumentsEveryVariable(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range envVars {
		if !strings.Contains(string(b), "| `"+v.Name+"` |") {
			t.Errorf("README.md's configuration table lacks %s", v.Name)
		}
	}
}

// TestREADMEListsEveryTool keeps README's tool table in step with the registry.
func TestREADMEListsEveryTool(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for name, rule := range mcp.ToolNames() {
		row := "| `" + name + "` | " + string(rule.Role) + " | `" + rule.Scope + "` |"
		if !strings.Contains(string(b), row) {
			t.Errorf("README.md's tool table lacks %s", row)
		}
	}
}
