// Package migrations embeds Gatehouse's SQL migrations.
//
// control/ builds the control schema "gatehouse" (tenants, members, API keys,
// and later OAuth state, signing keys, rate limits and the global audit log).
// tenant/ is applied to every tenant schema. Files are named NNNN_name.sql and
// numbered from 0001 without gaps; each runs in its own transaction.
//
// Rules for writing migrations (the previous release keeps serving while the
// next one migrates, and tenants may briefly be on different versions):
//   - additive only: add tables, columns with defaults, indexes; never rename
//     or drop what the previous release reads;
//   - tenant migrations use unqualified names (search_path is the tenant
//     schema) and never reference another schema: no foreign keys into the
//     control schema, so each tenant schema can be distributed on its own
//     (Citus schema-based sharding);
//   - tenant migrations grant exactly what the tenant role may do to each
//     object they create, writing {{tenant_role}} for the role's quoted name;
//   - a function a tenant migration creates is named with {{tenant_tag}}
//     (the hex of the schema name) so that no name is shared by thousands
//     of schemas: PostgreSQL resolves a function name by listing every
//     function of that name in the database (see tenant/0003);
//     a table the query tool may read is also named in store's queryTables
//     (granted by name, never ON ALL TABLES or by default privileges).
//
// This package owns only the SQL text; store applies it.
package migrations

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"sync"
)

//go:embed control/*.sql tenant/*.sql
var files embed.FS

// Migration is one numbered SQL file.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Control returns the control-schema migrations in order.
func Control() []Migration { return mustLoad("control") }

// Tenant returns the tenant-schema migrations in order (with any added by
// [AddTenantForBenchmark]).
func Tenant() []Migration {
	ms := mustLoad("tenant")
	extraMu.Lock()
	defer extraMu.Unlock()
	for _, m := range extraTenant {
		ms = append(ms, Migration{Version: len(ms) + 1, Name: m.Name, SQL: m.SQL})
	}
	return ms
}

var (
	extraMu     sync.Mutex
	extraTenant []Migration
)

// AddTenantForBenchmark adds a tenant migration after the embedded ones,
// in this process only: it stands for the next release's migration in
// benchmarks and tests that apply one to every tenant schema
// (bench/tenants, the rolling-deploy tests). remove takes every added one
// away again. Never call it in a server.
func AddTenantForBenchmark(name, sql string) (remove func()) {
	extraMu.Lock()
	defer extraMu.Unlock()
	extraTenant = append(extraTenant, Migration{Name: name, SQL: sql})
	return func() {
		extraMu.Lock()
		defer extraMu.Unlock()
		extraTenant = nil
	}
}

func mustLoad(dir string) []Migration {
	ms, err := load(files, dir)
	if err != nil {
		panic(err) // embedded at build time; TestMigrationsLoad keeps this from happening
	}
	return ms
}

func load(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, e := range entries { // ReadDir sorts by name
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || len(num) != 4 {
			return nil, fmt.Errorf("migrations/%s/%s: want NNNN_name.sql", dir, e.Name())
		}
		if v != len(ms)+1 {
			return nil, fmt.Errorf("migrations/%s/%s: version %d, want %d (no gaps or duplicates)", dir, e.Name(), v, len(ms)+1)
		}
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(b)})
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("migrations/%s: no migrations", dir)
	}
	return ms, nil
}
