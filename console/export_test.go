package console_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/console"
)

func TestSpreadsheetSafe(t *testing.T) {
	for in, want := range map[string]string{
		"=1+2": "'=1+2", "+1": "'+1", "-1": "'-1", "@SUM(A1)": "'@SUM(A1)", "\t=x": "'\t=x", "\r=x": "'\r=x",
		"add_todo": "add_todo", "": "", "a=b": "a=b", "ü=": "ü=",
	} {
		if got := console.SpreadsheetSafe(in); got != want {
			t.Errorf("SpreadsheetSafe(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestAuditExportEscapesFormulas: text that reached the audit log from a
// caller (a user agent, a reason) and would run as a spreadsheet formula
// is exported as text in CSV, unchanged in JSON lines; filters apply.
func TestAuditExportEscapesFormulas(t *testing.T) {
	s := newSite(t, siteOpts{})
	b := s.signedIn("ada-1", "ada@acme.example")
	tn, _ := s.db.FindTenantByKey(context.Background(), "acme.example")
	table := pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()
	s.exec(t, `INSERT INTO `+table+` (decision, tool, subject, user_agent, reason) VALUES
		('DENIED', 'query', 'corp:eve', '=HYPERLINK("https://evil.example","click")', '+cmd|'' /C calc''!A0'),
		('ALLOWED', 'whoami', 'corp:eve', '@SUM(1)', '-2+3')`)
	res := b.get("/console/admin/audit/export?format=csv&actor=corp:eve")
	if res.status != http.StatusOK || !strings.Contains(res.header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("export: %d %v", res.status, res.header)
	}
	rows, err := csv.NewReader(strings.NewReader(res.body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 {
		t.Fatalf("%d rows, want the header and eve's two", len(rows))
	}
	for _, row := range rows[1:] {
		for _, cell := range row {
			if cell != "" && strings.ContainsRune("=+-@\t\r", rune(cell[0])) {
				t.Errorf("cell %q would run as a formula", cell)
			}
		}
	}
	if !strings.Contains(res.body, `'=HYPERLINK(`) || !strings.Contains(res.body, `'-2+3`) {
		t.Errorf("escaped cells not kept readable:\n%s", res.body)
	}
	jl := b.get("/console/admin/audit/export?format=jsonl&actor=corp:eve&decision=DENIED")
	lines := strings.Split(strings.TrimSpace(jl.body), "\n")
	if len(lines) != 1 {
		t.Fatalf("JSON lines with the decision filter: %d lines", len(lines))
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil || rec["user_agent"] != `=HYPERLINK("https://evil.example","click")` {
		t.Errorf("JSON line: %v %v", rec, err)
	}
	if p := b.get("/console/admin/audit/export?format=xlsx"); p.status != http.StatusBadRequest {
		t.Errorf("unknown format: %d", p.status)
	}
}
