package store

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// ControlLaneOf is the control lane of tenant id's work now (without
// counting it as met).
func ControlLaneOf(db *DB, id string) int { return laneAmong(id, db.ctl.inUse()) }

// ControlLaneMet returns, for each control lane (in lane order), the ids
// of the tenants its connection has served. While no audit work runs.
func ControlLaneMet(ctx context.Context, db *DB) ([]map[string]struct{}, error) {
	var met []map[string]struct{}
	err := db.ctl.pool.each(ctx, func(c *pgxpool.Conn) error {
		set, _ := c.Conn().PgConn().CustomData()[metTenantsKey].(map[string]struct{})
		met = append(met, set)
		return nil
	})
	return met, err
}

// HoldControlLane takes lane's connection until release is called, as a
// chain pass on that lane would.
func HoldControlLane(ctx context.Context, db *DB, lane int) (release func(), err error) {
	_, release, err = db.ctl.acquire(ctx, lane, "")
	return release, err
}
