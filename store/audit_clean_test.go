package store_test

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// oddBytes is the family of text no audit record may be refused for: NUL,
// invalid UTF-8, overlong encodings, UTF-8-encoded surrogates (CESU),
// control characters and terminal escapes, and values far over any bound.
var oddBytes = []string{
	"",
	"plain",
	"x\xffy",
	"nul\x00inside",
	"\x00",
	"overlong \xc0\x80 and \xe0\x80\xaf",
	"surrogate \xed\xa0\x80 half",
	"escape \x1b[31mred\x1b[0m bell\a del\x7f c1\u0085",
	"line\nbreak\rreturn\ttab",
	"real replacement \uFFFD char",
	"truncated multibyte \xe2\x82",
	strings.Repeat("é", 5000),
	strings.Repeat("\xff", 100000),
	strings.Repeat("a", 1<<20),
}

func checkClean(t *testing.T, field, got string, limit int) {
	t.Helper()
	if !utf8.ValidString(got) {
		t.Errorf("%s: %q is not valid UTF-8", field, got)
	}
	if len(got) > limit {
		t.Errorf("%s: %d bytes, over the bound of %d", field, len(got), limit)
	}
	for _, r := range got {
		if unicode.IsControl(r) && r != '\t' {
			t.Errorf("%s: %q keeps control character %U", field, got, r)
			break
		}
	}
}

func TestCleanText(t *testing.T) {
	for _, s := range oddBytes {
		got := store.CleanText(s, 256)
		checkClean(t, "CleanText", got, 256)
		if again := store.CleanText(got, 256); again != got {
			t.Errorf("CleanText is not idempotent: %q then %q", got, again)
		}
	}
	for in, want := range map[string]string{
		"Mozilla/5.0 (X11)":       "Mozilla/5.0 (X11)",
		"x\xffy":                  "x\uFFFDy",
		"a\x00b":                  "a\uFFFDb",
		"tab\tkept":               "tab\tkept",
		"esc\x1b[0m":              "esc\uFFFD[0m",
		"\uFFFD stays":            "\uFFFD stays",
		strings.Repeat("é", 200):  strings.Repeat("é", 126) + "…", // 256 bytes: 126 × 2 + 3, on a character boundary
		strings.Repeat("ab", 200): strings.Repeat("ab", 126) + "a…",
	} {
		if got := store.CleanText(in, 256); got != want {
			t.Errorf("CleanText(%.40q) = %.60q, want %.60q", in, got, want)
		}
	}
}

// FuzzCleanText: whatever the bytes, the result is valid UTF-8 without
// control characters, within its bound, and cleaning it again changes
// nothing.
func FuzzCleanText(f *testing.F) {
	for _, s := range oddBytes {
		f.Add(s, 64)
	}
	f.Fuzz(func(t *testing.T, s string, limit int) {
		limit = 8 + abs(limit)%2048
		got := store.CleanText(s, limit)
		checkClean(t, "CleanText", got, limit)
		if again := store.CleanText(got, limit); again != got {
			t.Errorf("not idempotent: %q then %q", got, again)
		}
	})
}

func abs(n int) int {
	if n < 0 {
		return -(n + 1)
	}
	return n
}

// FuzzInsertAuditAnyBytes puts the same odd text in every text field of a
// record: the record is stored (never refused), cleaned and bounded.
func FuzzInsertAuditAnyBytes(f *testing.F) {
	for _, s := range oddBytes {
		f.Add(s)
	}
	db := storetest.MustOpenDB(f)
	tn := mustTenant(f, db, "acme.com")
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, s string) {
		r := &store.AuditRecord{RequestID: s, Decision: store.Denied, Tool: s, Subject: s, Email: s, Provider: s,
			APIKeyID: s, ClientIP: s, UserAgent: s, Reason: s, ArgsDigest: testKey.Digest([]byte(s))}
		if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error { return store.InsertAudit(ctx, tx, r) }); err != nil {
			t.Fatalf("record refused for its content: %v", err)
		}
		var got *store.AuditRecord
		err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			recs, _, err := store.FindAudit(ctx, tx, store.AuditFilter{Limit: 1})
			if len(recs) == 1 {
				got = recs[0]
			}
			return err
		})
		if err != nil || got == nil || got.ID != r.ID {
			t.Fatalf("stored record not found: %v", err)
		}
		for field, v := range map[string]string{"request_id": got.RequestID, "tool": got.Tool, "subject": got.Subject,
			"email": got.Email, "provider": got.Provider, "api_key_id": got.APIKeyID, "client_ip": got.ClientIP,
			"user_agent": got.UserAgent, "reason": got.Reason} {
			checkClean(t, field, v, 1024)
		}
		if got.UserAgent != r.UserAgent || got.Reason != r.Reason {
			t.Errorf("the record mirrored (%q) is not the record stored (%q)", r.UserAgent, got.UserAgent)
		}
	})
}

// TestInsertAuditRecordsNeverDropsTheBatch: a record the table refuses
// (here: a decision its CHECK does not know) is stored in its reduced form,
// and the other records of its batch are stored as they are; the chain
// verifies.
func TestInsertAuditRecordsNeverDropsTheBatch(t *testing.T) {
	db := storetest.MustOpenDB(t)
	tn := mustTenant(t, db, "acme.com")
	ctx := context.Background()
	recs := []*store.AuditRecord{
		{RequestID: "a", Decision: store.RateLimited, Tool: "whoami", Subject: "s", UserAgent: "x\xffy", Count: 3},
		{RequestID: "b", Decision: "BOGUS", Tool: "whoami", Subject: "s\x00", Reason: "why", Count: 2},
		{RequestID: "c", Decision: store.RateLimited, Tool: "add_todo", Subject: "s", UserAgent: strings.Repeat("\x00", 5000)},
	}
	lost, err := db.InsertAuditRecords(ctx, tn, recs)
	if err != nil || lost != 0 {
		t.Fatalf("lost %d: %v", lost, err)
	}
	if _, err := db.ChainAudit(ctx, tn, testKey, 100); err != nil {
		t.Fatal(err)
	}
	var stored []*store.AuditRecord
	_ = db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
		stored, _, err = store.FindAudit(ctx, tx, store.AuditFilter{Limit: 10})
		return err
	})
	if len(stored) != 3 {
		t.Fatalf("%d records stored of 3: %+v", len(stored), stored)
	}
	byID := map[string]*store.AuditRecord{}
	for _, r := range stored {
		byID[r.RequestID] = r
	}
	if r := byID["b"]; r == nil || r.Decision != store.Failed || !strings.Contains(r.Reason, "reduced") || !strings.Contains(r.Reason, "BOGUS") || r.Count != 2 {
		t.Errorf("the refused record: %+v, want its reduced form", r)
	}
	if r := byID["a"]; r == nil || r.UserAgent != "x\uFFFDy" || r.Count != 3 {
		t.Errorf("a batch-mate: %+v", r)
	}
	if r := byID["c"]; r == nil || len(r.UserAgent) > 256 {
		t.Errorf("a batch-mate: %+v", r)
	}
	if rep := verify(t, db, tn); !rep.OK() || rep.Verified != 3 {
		t.Errorf("chain: %+v", rep)
	}
}

// TestRecordAuthFailuresAnyBytes: failed authentications with odd user
// agents and reasons are all stored, cleaned.
func TestRecordAuthFailuresAnyBytes(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	now := time.Now()
	var fs []store.AuthFailure
	for i, s := range oddBytes {
		fs = append(fs, store.AuthFailure{Window: now.Truncate(time.Minute), ClientIP: "192.0.2." + string(rune('0'+i%10)) + s[:min(len(s), 3)],
			Reason: "bad token " + s, UserAgent: s, Count: 1, First: now, Last: now})
	}
	if err := db.RecordAuthFailures(ctx, fs); err != nil {
		t.Fatal(err)
	}
	var n int64
	var agents []string
	rows, _ := db.Pool().Query(ctx, "SELECT count, user_agent FROM gatehouse.auth_failures")
	for rows.Next() {
		var c int64
		var ua string
		if err := rows.Scan(&c, &ua); err != nil {
			t.Fatal(err)
		}
		n += c
		agents = append(agents, ua)
	}
	if rows.Err() != nil || n != int64(len(fs)) {
		t.Fatalf("%d failures counted of %d: %v", n, len(fs), rows.Err())
	}
	for _, ua := range agents {
		checkClean(t, "user_agent", ua, 256)
	}
}
