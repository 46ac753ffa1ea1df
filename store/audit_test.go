package store_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

var testKey = store.NewAuditKey([]byte("test audit key"))

// auditFixture is a tenant with n chained audit records.
func auditFixture(t *testing.T, n int) (*store.DB, *tenancy.Tenant) {
	t.Helper()
	db := storetest.MustOpenDB(t)
	tn := mustTenant(t, db, "acme.com")
	ctx := context.Background()
	for i := range n {
		err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			return store.InsertAudit(ctx, tx, &store.AuditRecord{RequestID: fmt.Sprint("r", i), Decision: store.Allowed, Tool: "add_todo", Subject: "github:1"})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if got, err := db.ChainAudit(ctx, tn, testKey, 1000); err != nil || got != n {
		t.Fatalf("chained %d, %v", got, err)
	}
	return db, tn
}

func verify(t *testing.T, db *store.DB, tn *tenancy.Tenant) *store.AuditReport {
	t.Helper()
	rep, err := db.VerifyAudit(context.Background(), tn, testKey)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestAuditChainVerifies(t *testing.T) {
	db, tn := auditFixture(t, 5)
	ctx := context.Background()
	if rep := verify(t, db, tn); !rep.OK() || rep.Verified != 5 {
		t.Fatalf("intact chain: %+v", rep)
	}
	// More records chain onto the same chain, in batches.
	for range 3 {
		_ = db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			return store.InsertAudit(ctx, tx, &store.AuditRecord{Decision: store.Denied, Tool: "whoami", Subject: "x"})
		})
	}
	if rep := verify(t, db, tn); !rep.OK() || rep.Pending != 3 {
		t.Fatalf("with pending records: %+v", rep)
	}
	if n, _ := db.ChainAudit(ctx, tn, testKey, 2); n != 2 {
		t.Errorf("batch of 2 chained %d", n)
	}
	if n, _ := db.ChainAudit(ctx, tn, testKey, 2); n != 1 {
		t.Errorf("rest chained %d", n)
	}
	if rep := verify(t, db, tn); !rep.OK() || rep.Verified != 8 || rep.Pending != 0 {
		t.Fatalf("after more chaining: %+v", rep)
	}
	// With only another key, the chain is unverifiable here, not intact,
	// and the report names the key it was chained with.
	if rep, _ := db.VerifyAudit(ctx, tn, store.NewAuditKey([]byte("another key"))); rep.OK() || rep.UnknownKey != testKey.ID ||
		!strings.Contains(rep.Problem, "unverifiable here: record 1 (id ") ||
		!strings.Contains(rep.Problem, "chained with key "+testKey.ID+", which is not configured (tampering cannot be told apart from a missing key)") {
		t.Errorf("verifying with the wrong key: %+v", rep)
	}
}

// TestAuditKeyRotation: after GATEHOUSE_AUDIT_KEY is rotated, one run
// verifies the whole chain with the new and old keys together, reports
// which stretch each key chained, and refuses records a retired key
// chained after the rotation.
func TestAuditKeyRotation(t *testing.T) {
	db, tn := auditFixture(t, 3) // chained with testKey
	ctx := context.Background()
	newKey := store.NewAuditKey([]byte("the new audit key"))
	add := func(n int, key store.AuditKey) {
		t.Helper()
		for range n {
			_ = db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
				return store.InsertAudit(ctx, tx, &store.AuditRecord{Decision: store.Allowed, Tool: "whoami", Subject: "y"})
			})
		}
		if got, err := db.ChainAudit(ctx, tn, key, 100); err != nil || got != n {
			t.Fatalf("chained %d, %v", got, err)
		}
	}
	add(2, newKey)
	if rep, _ := db.VerifyAudit(ctx, tn, newKey); rep.OK() || !strings.Contains(rep.Problem, "record 1 ") {
		t.Errorf("the new key alone: %+v", rep)
	}
	rep, err := db.VerifyAudit(ctx, tn, newKey, testKey)
	if err != nil || !rep.OK() || rep.Verified != 5 {
		t.Fatalf("new and old key: %+v %v", rep, err)
	}
	want := []store.AuditKeySpan{{KeyID: testKey.ID, First: 1, Last: 3}, {KeyID: newKey.ID, First: 4, Last: 5}}
	if !slices.Equal(rep.Keys, want) {
		t.Errorf("spans %+v, want %+v", rep.Keys, want)
	}
	// The keys' order says which is newer: listed the wrong way round, the
	// chain appears to go back to an older key.
	if rep, _ := db.VerifyAudit(ctx, tn, testKey, newKey); rep.OK() {
		t.Errorf("keys listed oldest first: %+v", rep)
	}
	// Someone holding the retired key chains records after the rotation.
	add(1, testKey)
	rep, _ = db.VerifyAudit(ctx, tn, newKey, testKey)
	if rep.OK() || rep.Seq != 6 || !strings.Contains(rep.Problem, "retired key") {
		t.Errorf("a record chained with the retired key after the rotation: %+v", rep)
	}
}

// TestAuditTamperDetection: each kind of tampering by someone with write
// access to the table is found, and the first bad record is named.
func TestAuditTamperDetection(t *testing.T) {
	tests := []struct {
		name    string
		tamper  string // SQL on the tenant's audit_log (%s: the table)
		problem string
		seq     int64
	}{
		{"edited", "UPDATE %[1]s SET reason = 'nothing to see' WHERE chain_seq = 3", "altered", 3},
		{"edited time", "UPDATE %[1]s SET at = at - interval '1 day' WHERE chain_seq = 2", "altered", 2},
		{"deleted", "DELETE FROM %[1]s WHERE chain_seq = 4", "missing", 5},
		{"reordered", "UPDATE %[1]s SET chain_seq = -2 WHERE chain_seq = 2; UPDATE %[1]s SET chain_seq = 2 WHERE chain_seq = 3;" +
			"UPDATE %[1]s SET chain_seq = 3 WHERE chain_seq = -2", "", 2},
		{"inserted", "UPDATE %[1]s SET chain_seq = chain_seq + 1000 WHERE chain_seq >= 3; UPDATE %[1]s SET chain_seq = chain_seq - 999 WHERE chain_seq > 1000;" +
			"INSERT INTO %[1]s (decision, subject, chain_seq, key_id, prev_hash, hash) SELECT 'ALLOWED', 'mallory', 3, key_id, hash, hash FROM %[1]s WHERE chain_seq = 2", "", 3},
		{"truncated", "DELETE FROM %[1]s WHERE chain_seq >= 5", "removed from the end", 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, tn := auditFixture(t, 6)
			table := pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()
			if _, err := db.Pool().Exec(context.Background(), fmt.Sprintf(tt.tamper, table)); err != nil {
				t.Fatal(err)
			}
			rep := verify(t, db, tn)
			if rep.OK() || rep.Seq != tt.seq || !strings.Contains(rep.Problem, tt.problem) {
				t.Errorf("report %+v; want the problem at record %d mentioning %q", rep, tt.seq, tt.problem)
			}
		})
	}
}

// TestTenantRoleCannotTamper: the role tool calls run as may append and
// read, nothing else.
func TestTenantRoleCannotTamper(t *testing.T) {
	db, tn := auditFixture(t, 2)
	ctx := context.Background()
	for _, sql := range []string{
		"UPDATE audit_log SET reason = 'x'",
		"DELETE FROM audit_log",
		"INSERT INTO audit_log (decision, subject, chain_seq) VALUES ('ALLOWED', 'x', 99)",
		"INSERT INTO audit_log (decision, subject, hash) VALUES ('ALLOWED', 'x', '\\x00')",
		"INSERT INTO audit_log (decision, subject, at) VALUES ('ALLOWED', 'x', now() - interval '1 year')",
		"TRUNCATE audit_log",
		"UPDATE gatehouse.audit_heads SET chain_seq = 0",
	} {
		err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error { _, err := tx.Exec(ctx, sql); return err })
		if err == nil {
			t.Errorf("tenant role could run %q", sql)
		}
	}
	if rep := verify(t, db, tn); !rep.OK() {
		t.Errorf("chain after the attempts: %+v", rep)
	}
}

func TestAuditDigest(t *testing.T) {
	a, b := testKey.Digest([]byte(`{"title":"x"}`)), testKey.Digest([]byte(`{"title":"x"}`))
	if a != b || len(a) != 32 {
		t.Errorf("digests of equal arguments: %q %q", a, b)
	}
	if a == testKey.Digest([]byte(`{"title":"y"}`)) || a == store.NewAuditKey([]byte("other")).Digest([]byte(`{"title":"x"}`)) {
		t.Error("different arguments or keys give the same digest")
	}
}

// TestAuditPendingMarksOnlyTenantsWithUnchainedRecords: the chainer's
// pass after a start asks the control schema, not every tenant schema:
// it finds the tenants written to, never an idle one, and a mark goes only
// once nothing is left to chain and it has not been renewed for ten
// minutes.
func TestAuditPendingMarksOnlyTenantsWithUnchainedRecords(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	key := store.NewAuditKey([]byte("test key"))
	a, b, idle := mustTenant(t, db, "a.example"), mustTenant(t, db, "b.example"), mustTenant(t, db, "idle.example")
	pending := func() string {
		t.Helper()
		ts, err := db.TenantsWithUnchainedAudit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, tn := range ts {
			keys = append(keys, tn.Key)
		}
		return strings.Join(keys, ",")
	}
	if got := pending(); got != "" {
		t.Fatalf("pending after provisioning: %v", got)
	}
	write := func(db *store.DB, tn *tenancy.Tenant) {
		t.Helper()
		err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			return store.InsertAudit(ctx, tx, &store.AuditRecord{Decision: store.Allowed, Subject: "s"})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	write(db, a)
	write(db, b)
	if got := pending(); got != "a.example,b.example" {
		t.Fatalf("pending: %s", got)
	}
	age := func(minutes int) {
		t.Helper()
		if _, err := db.Pool().Exec(ctx, "UPDATE gatehouse.audit_pending SET marked_at = now() - make_interval(mins => $1)", minutes); err != nil {
			t.Fatal(err)
		}
	}
	chain := func(tn *tenancy.Tenant, batch, want int) {
		t.Helper()
		if n, err := db.ChainAudit(ctx, tn, key, batch); err != nil || n != want {
			t.Fatalf("chain %s: %d, %v; want %d", tn.Key, n, err, want)
		}
	}
	// Chained, but marked a moment ago: a transaction may still be
	// writing; the mark stays.
	chain(a, 100, 1)
	chain(idle, 100, 0)
	if got := pending(); got != "a.example,b.example" {
		t.Fatalf("pending after chaining a: %s", got)
	}
	// Not renewed for 11 minutes: a's goes; b's stays while b has
	// unchained records, also after a batch that leaves some behind.
	age(11)
	chain(a, 100, 0)
	write(db, b) // this process marked b less than a minute ago: no renewal
	write(db, b)
	chain(b, 2, 2)
	if got := pending(); got != "b.example" {
		t.Fatalf("pending: %s", got)
	}
	chain(b, 2, 1)
	if got := pending(); got != "" {
		t.Fatalf("pending at the end: %s", got)
	}
	// Another process (its own memory of marks) marks again.
	db2, err := store.Open(ctx, db.Pool().Config().ConnString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	write(db2, a)
	if got := pending(); got != "a.example" {
		t.Fatalf("pending after another process wrote: %s", got)
	}
}

// TestAuditPendingNeverLosesARecord: writers and the chainer run at once
// (goroutines released together); whenever all stop, every tenant with an
// unchained record is still marked.
func TestAuditPendingNeverLosesARecord(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	key := store.NewAuditKey([]byte("test key"))
	tn := mustTenant(t, db, "busy.example")
	for round := range 20 {
		start := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 3 {
			wg.Go(func() {
				<-start
				for i := range 3 {
					err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
						if (w+i+round)%2 == 0 {
							time.Sleep(time.Millisecond) // a longer transaction
						}
						return store.InsertAudit(ctx, tx, &store.AuditRecord{Decision: store.Allowed, Subject: "s"})
					})
					if err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Go(func() {
			<-start
			for range 5 {
				if _, err := db.ChainAudit(ctx, tn, key, 1000); err != nil {
					t.Error(err)
				}
			}
		})
		close(start)
		wg.Wait()
		var unchained, marked bool
		err := db.Pool().QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()+
			" WHERE chain_seq IS NULL), EXISTS (SELECT 1 FROM gatehouse.audit_pending WHERE tenant_id = $1)", tn.ID).Scan(&unchained, &marked)
		if err != nil {
			t.Fatal(err)
		}
		if unchained && !marked {
			t.Fatalf("round %d: unchained records and no mark: the chainer's next start would miss them", round)
		}
	}
	if rep, err := db.VerifyAudit(ctx, tn, key); err != nil || !rep.OK() {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
}

// TestAuditChainOutOfOrderConcurrentChainers: records committed out of id
// order (a transaction that took its id first commits last) are chained
// after the records that overtook it, while three replicas' chainers (each
// its own store.DB, as separate processes have) run at once with small
// batches, released together, as writers keep committing. Every record
// ends up chained exactly once, positions 1…n without a gap or a repeat,
// and the chain verifies. The chainer relies on its per-tenant advisory
// lock alone (no row locks): a chainer that ran beside another would
// assign a position twice or skip one.
func TestAuditChainOutOfOrderConcurrentChainers(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "late.example")
	table := pgx.Identifier{tn.Schema, "audit_log"}.Sanitize()
	replicas := withReplicas(t, db, 2)
	write := func(subject string) {
		t.Helper()
		if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			return store.InsertAudit(ctx, tx, &store.AuditRecord{Decision: store.Allowed, Tool: "whoami", Subject: subject})
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Two slow transactions take their ids first and commit last.
	hold := make(chan struct{})
	inserted := make(chan int64, 2)
	var slow sync.WaitGroup
	for i := range 2 {
		slow.Go(func() {
			err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
				r := &store.AuditRecord{Decision: store.Allowed, Tool: "add_todo", Subject: fmt.Sprint("slow", i)}
				if err := store.InsertAudit(ctx, tx, r); err != nil {
					return err
				}
				inserted <- r.ID
				<-hold
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	lateIDs := []int64{<-inserted, <-inserted}
	for i := range 20 {
		write(fmt.Sprint("early", i))
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, r := range replicas {
		wg.Go(func() {
			<-start
			for range 15 {
				if _, err := r.ChainAudit(ctx, tn, testKey, 3); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Go(func() {
		<-start
		for i := range 20 {
			write(fmt.Sprint("during", i))
		}
	})
	close(start)
	wg.Wait()
	close(hold)
	slow.Wait()
	for range 20 { // 42 records at most, 5 at a time
		n, err := replicas[1].ChainAudit(ctx, tn, testKey, 5)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	rep, err := db.VerifyAudit(ctx, tn, testKey)
	if err != nil || !rep.OK() || rep.Verified != 42 || rep.Pending != 0 {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
	var records, distinct, first, last int64
	if err := db.Pool().QueryRow(ctx, "SELECT count(*), count(DISTINCT chain_seq), min(chain_seq), max(chain_seq) FROM "+table).
		Scan(&records, &distinct, &first, &last); err != nil {
		t.Fatal(err)
	}
	if records != 42 || distinct != 42 || first != 1 || last != 42 {
		t.Fatalf("%d records, %d distinct positions from %d to %d; want 42 positions 1…42", records, distinct, first, last)
	}
	// The late records come after records with higher ids.
	var overtaken int
	if err := db.Pool().QueryRow(ctx, "SELECT count(*) FROM "+table+" a JOIN "+table+" l ON l.id = ANY($1) WHERE a.id > l.id AND a.chain_seq < l.chain_seq",
		lateIDs).Scan(&overtaken); err != nil {
		t.Fatal(err)
	}
	if overtaken < 40 {
		t.Fatalf("the late records were overtaken %d times; want at least 40 (each by every record committed while it was open)", overtaken)
	}
}

// withReplicas returns db and n more DBs on its database, as replicas of
// one deployment would be (closed when t ends).
func withReplicas(t *testing.T, db *store.DB, n int) []*store.DB {
	t.Helper()
	replicas := []*store.DB{db}
	for range n {
		r, err := store.Open(context.Background(), db.Pool().Config().ConnString(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		replicas = append(replicas, r)
	}
	return replicas
}
