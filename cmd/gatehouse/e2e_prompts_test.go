package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/mcp"
)

// TestEndToEndPrompts drives `gatehouse serve` with MCP Inspector's CLI:
// prompts/list shows each key the prompts its role and scopes allow, and
// prompts/get renders with the tenant's data, refuses what the role does
// not allow, and answers bad arguments with a clear error.
func TestEndToEndPrompts(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs MCP Inspector")
	}
	nodeDir(t)
	s := runBinary(t)
	dev := strings.TrimSpace(s.cli(t, "apikey", "create", "--tenant", "acme.com", "--role", "developer", "--name", "e2e-dev"))
	viewer := strings.TrimSpace(s.cli(t, "apikey", "create", "--tenant", "acme.com", "--role", "viewer", "--name", "e2e-viewer"))

	listed := func(key string) []string {
		t.Helper()
		out, err := s.inspector(t, key, "--method", "prompts/list")
		if err != nil {
			t.Fatalf("inspector prompts/list: %v\n%s", err, out)
		}
		var list struct{ Prompts []struct{ Name string } }
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("prompts/list output: %v\n%s", err, out)
		}
		var names []string
		for _, p := range list.Prompts {
			names = append(names, p.Name)
		}
		slices.Sort(names)
		return names
	}
	if got := listed(dev); len(got) != len(mcp.PromptNames()) {
		t.Errorf("a developer lists prompts %v, want all %d", got, len(mcp.PromptNames()))
	}
	if got := listed(viewer); slices.Contains(got, "project_kickoff") || !slices.Contains(got, "weekly_review") {
		t.Errorf("a viewer lists prompts %v", got)
	}

	out, err := s.inspector(t, dev, "--method", "tools/call", "--tool-name", "create_project", "--tool-arg", "name=Apollo")
	var project struct{ StructuredContent struct{ ID string } }
	if err != nil || json.Unmarshal([]byte(out), &project) != nil || project.StructuredContent.ID == "" {
		t.Fatalf("create_project: %v\n%s", err, out)
	}
	args := []string{"--method", "tools/call", "--tool-name", "add_todo", "--tool-arg", "title=Launch checklist", "--tool-arg", "due_on=2020-01-31",
		"--tool-arg", "project_id=" + project.StructuredContent.ID}
	if out, err := s.inspector(t, dev, args...); err != nil {
		t.Fatalf("add_todo: %v\n%s", err, out)
	}

	out, err = s.inspector(t, viewer, "--method", "prompts/get", "--prompt-name", "weekly_review", "--prompt-args", "project=apollo")
	if err != nil || !strings.Contains(out, "## Overdue (1)") || !strings.Contains(out, "Launch checklist") {
		t.Errorf("weekly_review via inspector: %v\n%s", err, out)
	}
	out, err = s.inspector(t, dev, "--method", "prompts/get", "--prompt-name", "project_kickoff", "--prompt-args", "name=Hermes", "description=Fast messages")
	if err != nil || !strings.Contains(out, "create_project") || !strings.Contains(out, "Fast messages") {
		t.Errorf("project_kickoff via inspector: %v\n%s", err, out)
	}
	out, err = s.inspector(t, viewer, "--method", "prompts/get", "--prompt-name", "project_kickoff", "--prompt-args", "name=Hermes")
	if err == nil || !strings.Contains(out+err.Error(), "ACCESS DENIED") {
		t.Errorf("a viewer's project_kickoff via inspector was not refused: %v\n%s", err, out)
	}
	out, err = s.inspector(t, dev, "--method", "prompts/get", "--prompt-name", "weekly_review", "--prompt-args", "project=Apo\x07llo")
	if msg := out + errText(err); err == nil || !strings.Contains(msg, `argument \"project\" contains the control character U+0007`) && !strings.Contains(msg, `argument "project" contains the control character U+0007`) {
		t.Errorf("a control character in an argument via inspector: %v\n%s", err, out)
	}
	if strings.Contains(s.logs.String(), `"level":"ERROR"`) {
		t.Errorf("the server logged errors:\n%s", s.logs.String())
	}
	for _, secret := range []string{dev, viewer} {
		if strings.Contains(s.logs.String(), secret) {
			t.Errorf("a secret appears in the server log")
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
