package store_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// TestAuditBatchTenantsApart: group commits mixing tenants in every order,
// from concurrent writers (so that each control connection runs the one
// prepared INSERT for tenant after tenant, its schema set by search_path
// just before it), and pipelined writes of the three tenants in turn
// (their prepared audit INSERT likewise), put every record in its own
// tenant's log and nowhere else; and each record gets its id and time.
func TestAuditBatchTenantsApart(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	var tenants []*tenancy.Tenant
	for i := range 3 {
		tenants = append(tenants, mustTenant(t, db, fmt.Sprintf("batch-apart-%d.example", i)))
	}
	const rounds = 20
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range rounds {
				var entries []store.AuditEntry
				for k := range 1 + (w+i)%4 {
					tn := tenants[(w+i+k)%len(tenants)]
					entries = append(entries, store.AuditEntry{Tenant: tn, Rec: &store.AuditRecord{
						RequestID: fmt.Sprintf("%s/w%d-%d-%d", tn.Key, w, i, k), Decision: store.Allowed, Tool: "whoami", Subject: "s"}})
				}
				if err := db.InsertAuditBatch(ctx, entries); err != nil {
					t.Error(err)
					return
				}
				for _, e := range entries {
					if e.Rec.ID == 0 || e.Rec.At.IsZero() {
						t.Errorf("record %s got no id or time", e.Rec.RequestID)
					}
				}
			}
		})
	}
	for w := range 2 {
		wg.Go(func() {
			for i := range rounds {
				tn := tenants[(w+i)%len(tenants)]
				r := &store.AuditRecord{RequestID: fmt.Sprintf("%s/w-write%d-%d", tn.Key, w, i), Decision: store.Allowed, Tool: "add_todo", Subject: "s", Count: 1}
				if err := db.InTenantWrite(ctx, tn, func(ctx context.Context, tx pgx.Tx) error {
					_, err := store.AddTodo(ctx, tx, "t", "", "s")
					return err
				}, r); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	total := 0
	for _, tn := range tenants {
		err := db.WithTenant(ctx, tn, func(tx pgx.Tx) error {
			rows, _ := tx.Query(ctx, "SELECT request_id FROM audit_log WHERE request_id LIKE '%/w%'")
			ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
			for _, id := range ids {
				if !strings.HasPrefix(id, tn.Key+"/") {
					t.Errorf("%s's audit log holds %s", tn.Key, id)
				}
			}
			total += len(ids)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	want := 0
	for w := range 4 {
		for i := range rounds {
			want += 1 + (w+i)%4
		}
	}
	want += 2 * rounds
	if total != want {
		t.Errorf("%d records stored, %d written", total, want)
	}
}
