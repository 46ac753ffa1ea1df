package main

import (
	"runtime"
	"strconv"
	"time"

	"github.com/gatehouse-mcp/gatehouse/mcp"
	"github.com/gatehouse-mcp/gatehouse/store"
)

// loadBulkheads reads the connection bounds and concurrency caps
// (DESIGN §8b); "auto" scales with GOMAXPROCS (store.DefaultLimits,
// mcp.DefaultAdmission).
func loadBulkheads(get func(string) string, bad func(name, format string, args ...any)) (store.Options, mcp.Admission) {
	count := func(name string, auto int) int {
		v := get(name)
		if v == "auto" {
			return auto
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			bad(name, "%q is not auto or a number from 1 to 10000", v)
			return auto
		}
		return n
	}
	d := store.DefaultLimits(runtime.GOMAXPROCS(0))
	db := store.Options{
		TenantConns:      int32(count("GATEHOUSE_DB_TENANT_CONNS", 0)), // 0: pool_max_conns of DATABASE_URL, else the default
		ControlConns:     int32(count("GATEHOUSE_DB_CONTROL_CONNS", int(d.ControlConns))),
		QueryConns:       count("GATEHOUSE_QUERY_CONNS", d.QueryConns),
		TenantQueryConns: count("GATEHOUSE_TENANT_QUERY_CONNS", d.TenantQueryConns),
	}
	// offOr reads "off" (-1), "auto" (0, where allowed: the default) or a
	// number of 1 or more.
	offOr := func(name string, auto bool) int {
		switch v := get(name); v {
		case "off":
			return -1
		case "auto":
			if auto {
				return 0
			}
		default:
			if n, err := strconv.Atoi(v); err == nil && n >= 1 && n <= 1000000 {
				return n
			}
		}
		if auto {
			bad(name, "%q is not auto, off or a number of 1 or more", get(name))
		} else {
			bad(name, "%q is not off or a number of 1 or more", get(name))
		}
		return 0
	}
	db.ConnMaxUses = offOr("GATEHOUSE_DB_CONN_MAX_USES", false)
	db.ConnMaxTenants = offOr("GATEHOUSE_DB_CONN_MAX_TENANTS", false)
	db.ControlConnMaxTenants = offOr("GATEHOUSE_DB_CONTROL_CONN_MAX_TENANTS", false)
	if db.ControlLanes = offOr("GATEHOUSE_DB_CONTROL_LANES", true); db.ControlLanes < 0 {
		db.ControlLanes, db.NoControlAffinity = 0, true // off: the default lanes, no affinity
	}
	db.PreparedStatements = offOr("GATEHOUSE_DB_PREPARED_STATEMENTS", false)
	db.ControlPreparedStatements = offOr("GATEHOUSE_DB_CONTROL_PREPARED_STATEMENTS", false)
	switch v := get("GATEHOUSE_DB_GENERIC_PLANS"); v {
	case "on":
	case "off":
		db.CustomPlans = true
	default:
		bad("GATEHOUSE_DB_GENERIC_PLANS", "%q is not on or off", v)
	}
	switch v := get("GATEHOUSE_AUDIT_INTAKE"); v {
	case "on":
	case "off":
		db.NoAuditIntake = true
	default:
		bad("GATEHOUSE_AUDIT_INTAKE", "%q is not on or off", v)
	}
	db.AffinityConns = offOr("GATEHOUSE_DB_AFFINITY_CONNS", true)
	if db.TenantLanes = offOr("GATEHOUSE_DB_TENANT_LANES", true); db.TenantLanes < 0 {
		db.TenantLanes = 1 // off: one lane, no affinity
	}
	// Zero fields are filled in from the tenant-work pool's size once the
	// database is open (mcp.New).
	adm := mcp.Admission{
		Tenant:      count("GATEHOUSE_TENANT_CONCURRENCY", 0),
		Principal:   count("GATEHOUSE_PRINCIPAL_CONCURRENCY", 0),
		TenantQueue: count("GATEHOUSE_TENANT_QUEUE", 0),
	}
	w, err := time.ParseDuration(get("GATEHOUSE_ADMISSION_WAIT"))
	if err != nil || w < 0 || w > time.Minute {
		bad("GATEHOUSE_ADMISSION_WAIT", "%q is not a duration from 0s to 1m", get("GATEHOUSE_ADMISSION_WAIT"))
	} else {
		adm.Wait = w
	}
	return db, adm
}
