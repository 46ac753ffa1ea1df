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

// TestConfigurationDocIsGenerated: docs/configuration.md is what
// `gatehouse config --markdown` prints (regenerate it with that command).
func TestConfigurationDocIsGenerated(t *testing.T) {
	b, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != configMarkdown() {
		t.Error("docs/configuration.md is out of date: run `go run ./cmd/gatehouse config --markdown > docs/configuration.md`")
	}
}
