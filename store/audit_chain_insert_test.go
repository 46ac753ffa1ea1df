package store_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestAuditChainedAtInsert: group-committed batches are chained as they
// are written. Three writers (three replicas' group committers), pipelined
// writes whose records the chainer links, and the chainer itself all run
// at once on two tenants, released together (-race): every record is
// stored once, the chain verifies with every record on it, batches were
// chained at insert, and a bad record in a
// batch still leaves the others stored and the chain whole.
func TestAuditChainedAtInsert(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tenants := []*tenancy.Tenant{mustTenant(t, db, "chain-insert.example"), mustTenant(t, db, "chain-insert-2.example")}
	chains := []*store.AuditChain{store.NewAuditChain(testKey), store.NewAuditChain(testKey), store.NewAuditChain(testKey)}
	rec := func(id string) *store.AuditRecord {
		return &store.AuditRecord{RequestID: id, Decision: store.Allowed, Tool: "whoami", Subject: "s", Via: map[bool]string{true: "console"}[len(id)%2 == 0]}
	}
	const rounds = 30
	var chainedAtInsert, written atomic.Int64
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w, chain := range chains {
		wg.Go(func() {
			<-start
			for i := range rounds {
				var entries []store.AuditEntry
				for j := range 1 + i%5 {
					for _, tn := range tenants {
						entries = append(entries, store.AuditEntry{Tenant: tn, Rec: rec(fmt.Sprintf("w%d-%d-%d", w, i, j))})
					}
				}
				errs, _ := db.WriteAuditEntries(ctx, entries, chain)
				for k, err := range errs {
					if err != nil {
						t.Errorf("writer %d: %v", w, err)
						return
					}
					written.Add(1)
					if entries[k].Rec.ChainSeq != 0 {
						chainedAtInsert.Add(1)
					}
				}
			}
		})
	}
	wg.Go(func() { // pipelined writes, chained later
		<-start
		for i := range rounds {
			for _, tn := range tenants {
				r := rec(fmt.Sprintf("write-%d", i))
				r.Tool, r.Count = "add_todo", 1
				if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
					_, err := store.AddTodo(ctx, tx, "t", "", "s")
					return err
				}, r); err != nil {
					t.Error(err)
					return
				}
				written.Add(1)
			}
		}
	})
	wg.Go(func() { // the background chainer
		<-start
		for range rounds / 3 {
			for _, tn := range tenants {
				if _, err := db.ChainAudit(ctx, tn, testKey, 1000); err != nil {
					t.Error(err)
				}
			}
		}
	})
	close(start)
	wg.Wait()

	// A batch with a record the table refuses: the others are stored.
	bad := rec("bad")
	bad.Decision = "NOT A DECISION"
	good := rec("good-after-bad")
	errs, retried := db.WriteAuditEntries(ctx, []store.AuditEntry{{Tenant: tenants[0], Rec: good}, {Tenant: tenants[0], Rec: bad}}, chains[0])
	if retried == nil || errs[0] != nil {
		t.Fatalf("a batch with a bad record: %v, %v", errs, retried)
	}
	written.Add(2) // the bad record is stored in its reduced form

	total := int64(0)
	for _, tn := range tenants {
		if _, err := db.ChainAudit(ctx, tn, testKey, 100000); err != nil {
			t.Fatal(err)
		}
		rep, err := db.VerifyAudit(ctx, tn, testKey)
		if err != nil || !rep.OK() || rep.Pending != 0 {
			t.Fatalf("%s: %+v, %v", tn.Key, rep, err)
		}
		var n, distinct int64
		if err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, "SELECT count(*), count(DISTINCT request_id) FROM audit_log").Scan(&n, &distinct)
		}); err != nil {
			t.Fatal(err)
		}
		if rep.Verified != int(n) {
			t.Errorf("%s: %d records, %d on the chain", tn.Key, n, rep.Verified)
		}
		total += n
	}
	if total != written.Load() {
		t.Errorf("%d records stored, %d written", total, written.Load())
	}
	// Each writer's first batch per tenant is unchained, and so is a batch
	// whose expected head another writer or the chainer moved first (here
	// they contend on every batch; a lone writer chains every batch after
	// its first, see the key rotation test).
	if c := chainedAtInsert.Load(); c == 0 {
		t.Errorf("only %d of %d records were chained at insert", c, written.Load())
	}
	t.Logf("%d of %d records chained at insert", chainedAtInsert.Load(), written.Load())
}

// TestAuditChainedAtInsertKeyRotation: records chained at insert with the
// old key, then with the new one, verify with both keys given (newest
// first), and not with the new key alone.
func TestAuditChainedAtInsertKeyRotation(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "chain-insert-rotation.example")
	newKey := store.NewAuditKey([]byte("the new audit key"))
	for _, key := range []store.AuditKey{testKey, newKey} {
		chain := store.NewAuditChain(key)
		for i := range 3 {
			r := &store.AuditRecord{RequestID: fmt.Sprintf("%s-%d", key.ID, i), Decision: store.Allowed, Subject: "s"}
			if errs, err := db.WriteAuditEntries(ctx, []store.AuditEntry{{Tenant: tn, Rec: r}}, chain); err != nil || errs[0] != nil {
				t.Fatal(err, errs)
			}
			if i > 0 && r.ChainSeq == 0 {
				t.Errorf("batch %d with key %s was not chained at insert", i, key.ID)
			}
		}
		if _, err := db.ChainAudit(ctx, tn, key, 100); err != nil {
			t.Fatal(err)
		}
	}
	if rep, err := db.VerifyAudit(ctx, tn, newKey, testKey); err != nil || !rep.OK() || rep.Verified != 6 || len(rep.Keys) != 2 {
		t.Fatalf("%+v, %v", rep, err)
	}
	if rep, _ := db.VerifyAudit(ctx, tn, newKey); rep.OK() {
		t.Fatal("verified without the old key")
	}
}
