package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// AlertFilter selects a tenant's alerts, newest first.
type AlertFilter struct {
	Open     bool   // only those not acknowledged
	Kind     string // only this kind
	Subject  string // only this principal
	BeforeID int64  // only older than this alert (paging)
	Limit    int    // 1 to 200
}

const alertColumns = `id, audit_id, at, kind, subject, api_key_id, client_ip, summary, evidence::text, suspended, acknowledged_at, acknowledged_by`

func scanAlert(r pgx.CollectableRow) (*StoredAlert, error) {
	var a StoredAlert
	var ev string
	err := r.Scan(&a.ID, &a.AuditID, &a.At, &a.Kind, &a.Subject, &a.APIKeyID, &a.ClientIP, &a.Summary, &ev, &a.Suspended, &a.AcknowledgedAt, &a.AcknowledgedBy)
	a.Evidence = []byte(ev)
	return &a, err
}

// Alerts lists the tenant's alerts (see [AlertFilter]); more says whether
// older ones match too.
func (a *Admin) Alerts(ctx context.Context, f AlertFilter) (alerts []*StoredAlert, more bool, err error) {
	f.Limit = min(max(f.Limit, 1), 200)
	before := f.BeforeID
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, _ := a.tx.Query(ctx, `SELECT `+alertColumns+` FROM gatehouse.alerts
		WHERE tenant_id = $1 AND id < $2 AND (NOT $3 OR acknowledged_at IS NULL) AND ($4 = '' OR kind = $4) AND ($5 = '' OR subject = $5)
		ORDER BY id DESC LIMIT $6`, a.t.ID, before, f.Open, f.Kind, f.Subject, f.Limit+1)
	alerts, err = pgx.CollectRows(rows, scanAlert)
	if err != nil || len(alerts) <= f.Limit {
		return alerts, false, err
	}
	return alerts[:f.Limit], true, nil
}

// AcknowledgeAlert marks one of the tenant's alerts as seen by subject
// (ErrNotFound for any other id). Acknowledging twice keeps the first.
//
// already reports an alert acknowledged before (its first acknowledger
// and time are kept).
func (a *Admin) AcknowledgeAlert(ctx context.Context, id int64, by string) (al *StoredAlert, already bool, err error) {
	now := time.Now().Truncate(time.Microsecond) // PostgreSQL's precision: compared below
	rows, _ := a.tx.Query(ctx, `UPDATE gatehouse.alerts SET acknowledged_at = coalesce(acknowledged_at, $3),
			acknowledged_by = CASE WHEN acknowledged_at IS NULL THEN $4 ELSE acknowledged_by END
		WHERE tenant_id = $1 AND id = $2 RETURNING `+alertColumns, a.t.ID, id, now, CleanText(by, auditShortMax))
	al, err = pgx.CollectExactlyOneRow(rows, scanAlert)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, ErrNotFound
	}
	if err != nil {
		return nil, false, err
	}
	return al, al.AcknowledgedAt == nil || !al.AcknowledgedAt.Equal(now), nil
}
