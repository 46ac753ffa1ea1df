package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// indexUsage seeds one new tenant of db with a busy workspace (projects,
// todos, documents, audit records), runs every tenant read and write the
// tools make, rounds times, and returns how often each index of the
// tenant's schema was scanned (pg_stat_user_indexes), with the number of
// relations in the schema: which indexes earn their keep (issue 17).
func indexUsage(ctx context.Context, db *store.DB, rounds int) (string, error) {
	busy, err := seedBusy(ctx, db)
	if err != nil {
		return "", err
	}
	t := busy.t
	// Chain the records (as the chainer does) so that reads see a chained log.
	key := store.NewAuditKey([]byte("bench audit key, 32 bytes long.."))
	if _, err := db.ChainAudit(ctx, t, key, 10000); err != nil {
		return "", err
	}
	_, before, err := indexScans(ctx, db, t)
	if err != nil {
		return "", err
	}
	for r := range rounds {
		err := db.WithTenant(ctx, t, func(tx pgx.Tx) error { return toolMix(ctx, tx, busy, r) })
		if err != nil {
			return "", err
		}
		if r%10 == 9 {
			if _, err := db.ChainAudit(ctx, t, key, 1000); err != nil {
				return "", err
			}
		}
	}
	time.Sleep(time.Second) // statistics reach the cumulative views at the backends' next report
	after, _, err := indexScans(ctx, db, t)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, ix := range after {
		fmt.Fprintf(&b, "%s %d; ", ix.Name, ix.Scans-before[ix.Name])
	}
	var rels int
	_ = db.Pool().QueryRow(ctx, "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 OR c.oid IN (SELECT reltoastrelid FROM pg_class WHERE relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1)) OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT reltoastrelid FROM pg_class WHERE relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1)))", t.Schema).Scan(&rels)
	return fmt.Sprintf("%d relations per tenant (with TOAST); index scans in %d rounds of the tool mix: %s", rels, rounds, strings.TrimSuffix(b.String(), "; ")), nil
}

type indexScan struct {
	Name  string
	Scans int64
}

func indexScans(ctx context.Context, db *store.DB, t *tenancy.Tenant) ([]indexScan, map[string]int64, error) {
	_, _ = db.Pool().Exec(ctx, "SELECT pg_stat_clear_snapshot()")
	rows, _ := db.Pool().Query(ctx, "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes WHERE schemaname = $1 ORDER BY relname, indexrelname", t.Schema)
	list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[indexScan])
	if err != nil {
		return nil, nil, err
	}
	m := map[string]int64{}
	for _, ix := range list {
		m[ix.Name] = ix.Scans
	}
	return list, m, nil
}

// busyTenant is a tenant seeded with a busy workspace (seedBusy).
type busyTenant struct {
	t                     *tenancy.Tenant
	pids, todoIDs, docIDs []string
}

// seedBusy creates a tenant of db with 30 projects, 3,000 todos, 600
// documents and 5,000 audit records, analysed.
func seedBusy(ctx context.Context, db *store.DB) (*busyTenant, error) {
	t, _, err := db.EnsureTenant(ctx, fmt.Sprintf("indexes-%d.bench.example", time.Now().UnixNano()), tenancy.Organization)
	if err != nil {
		return nil, err
	}
	const projects, todos, docs = 30, 3000, 600
	var pids []string
	var todoIDs, docIDs []string
	err = db.WithTenant(ctx, t, func(tx pgx.Tx) error {
		for i := range projects {
			p, err := store.CreateProject(ctx, tx, fmt.Sprintf("Project %03d", i), "", "bench")
			if err != nil {
				return err
			}
			pids = append(pids, p.ID)
		}
		for i := range todos {
			n := store.NewTodo{Title: fmt.Sprintf("todo %d", i), CreatedBy: "bench"}
			if i%2 == 0 {
				n.ProjectID = &pids[i%projects]
			}
			if i%5 == 0 {
				d := time.Now().AddDate(0, 0, i%60-30)
				n.DueOn = &d
			}
			td, err := store.CreateTodo(ctx, tx, n)
			if err != nil {
				return err
			}
			todoIDs = append(todoIDs, td.ID)
		}
		words := strings.Fields("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa")
		for i := range docs {
			n := store.NewDocument{Title: words[i%len(words)] + " report", Body: strings.Repeat(words[(i*7)%len(words)]+" notes ", 40),
				Tags: []string{words[i%5], words[(i+3)%7]}, CreatedBy: "bench"}
			if i%3 == 0 {
				n.ProjectID = &pids[i%projects]
			}
			d, err := store.CreateDocument(ctx, tx, n)
			if err != nil {
				return err
			}
			docIDs = append(docIDs, d.ID)
		}
		for i := range 5000 {
			if err := store.InsertAudit(ctx, tx, &store.AuditRecord{Decision: "ALLOWED", Tool: "list_todos", Subject: fmt.Sprintf("apikey:%d", i%7)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if _, err := db.Pool().Exec(ctx, "ANALYZE "+pgx.Identifier{t.Schema}.Sanitize()+".todos; ANALYZE "+pgx.Identifier{t.Schema}.Sanitize()+".documents; ANALYZE "+
		pgx.Identifier{t.Schema}.Sanitize()+".projects; ANALYZE "+pgx.Identifier{t.Schema}.Sanitize()+".audit_log"); err != nil {
		return nil, err
	}
	return &busyTenant{t: t, pids: pids, todoIDs: todoIDs, docIDs: docIDs}, nil
}

// toolMix runs in tx (a busy tenant's, round r) every tenant read and
// write the tools make.
func toolMix(ctx context.Context, tx pgx.Tx, b *busyTenant, r int) error {
	yes, no := true, false
	due := time.Now()
	todoIDs, docIDs := b.todoIDs, b.docIDs
	p := ""
	if len(b.pids) > 0 {
		p = b.pids[r%len(b.pids)]
	}
	for _, f := range []store.TodoFilter{{Limit: 20}, {Done: &no, Limit: 20}, {Done: &yes, Limit: 20}, {ProjectID: p, Limit: 20}, {DueBefore: &due, Limit: 20}} {
		ts, _, err := store.ListTodos(ctx, tx, f)
		if err != nil {
			return err
		}
		if len(ts) > 0 {
			f.After = &store.TodoPosition{CreatedAt: ts[len(ts)-1].CreatedAt, ID: ts[len(ts)-1].ID}
			if _, _, err := store.ListTodos(ctx, tx, f); err != nil {
				return err
			}
		}
	}
	if _, err := store.FindTodo(ctx, tx, todoIDs[r%len(todoIDs)]); missing(err) {
		return err
	}
	title := fmt.Sprintf("renamed %d", r)
	if _, err := store.UpdateTodo(ctx, tx, todoIDs[(r*13)%len(todoIDs)], store.TodoUpdate{Title: &title}); missing(err) {
		return err
	}
	if _, err := store.CompleteTodo(ctx, tx, todoIDs[(r*17)%len(todoIDs)]); missing(err) {
		return err
	}
	if _, err := store.AddTodo(ctx, tx, "new", "", "bench"); err != nil {
		return err
	}
	for _, f := range []store.ProjectFilter{{Limit: 20}, {IncludeArchived: true, Limit: 20}} {
		if _, _, err := store.ListProjects(ctx, tx, f); err != nil {
			return err
		}
	}
	if _, err := store.FindProject(ctx, tx, p); missing(err) {
		return err
	}
	if _, err := store.CountProjectContents(ctx, tx, p); missing(err) {
		return err
	}
	for _, f := range []store.DocumentFilter{{Limit: 20}, {Tag: "alpha", Limit: 20}, {ProjectID: p, Limit: 20}} {
		if _, _, err := store.ListDocuments(ctx, tx, f); err != nil {
			return err
		}
	}
	for _, s := range []store.DocumentSearch{{Query: "bravo", Limit: 10}, {Query: "report", Tag: "charlie", Limit: 10}, {Query: "notes", ProjectID: p, Limit: 10}} {
		if _, _, err := store.SearchDocuments(ctx, tx, s); err != nil {
			return err
		}
	}
	if _, err := store.FindDocument(ctx, tx, docIDs[r%len(docIDs)]); missing(err) {
		return err
	}
	for _, f := range []store.AuditFilter{{Limit: 50}, {Tool: "list_todos", Limit: 50}, {Actor: "apikey:3", Limit: 50}, {Since: time.Now().Add(-time.Hour), Limit: 50}} {
		if _, _, err := store.FindAudit(ctx, tx, f); err != nil {
			return err
		}
	}
	return store.InsertAudit(ctx, tx, &store.AuditRecord{Decision: "ALLOWED", Tool: "list_todos", Subject: "bench"})
}

// missing reports whether err is a failure other than ErrNotFound (the
// rows an empty tenant lacks).
func missing(err error) bool { return err != nil && !errors.Is(err, store.ErrNotFound) }
