package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/gatehouse-mcp/gatehouse/store"
	"github.com/gatehouse-mcp/gatehouse/tenancy/anomaly"
)

// The admin tools of anomaly alerts (alerts.go): read them, acknowledge
// them. Both read the control schema's gatehouse.alerts through
// store.Admin, inside the call's tenant transaction, naming the caller's
// tenant only.

type listAlertsIn struct {
	Open    bool   `json:"open,omitempty" jsonschema:"only alerts nobody has acknowledged yet"`
	Kind    string `json:"kind,omitempty" jsonschema:"only this kind"`
	Subject string `json:"subject,omitempty" jsonschema:"only this principal (apikey:..., github:..., ...)"`
	Limit   int    `json:"limit,omitempty" jsonschema:"how many to return, 1 to 200 (default 50)"`
	Cursor  string `json:"cursor,omitempty" jsonschema:"next_cursor from the previous page"`
}

type listAlertsOut struct {
	Alerts     []*alertOut `json:"alerts"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

// alertOut is a stored alert with its evidence as an object (the output
// schema says so).
type alertOut struct {
	ID             int64          `json:"id"`
	AuditID        int64          `json:"audit_id" jsonschema:"the id of the alert's ALERT record in the audit log"`
	At             time.Time      `json:"at"`
	Kind           string         `json:"kind" jsonschema:"new_network, denial_burst, volume or off_hours_admin"`
	Subject        string         `json:"subject" jsonschema:"the principal it is about"`
	APIKeyID       string         `json:"api_key_id,omitempty"`
	ClientIP       string         `json:"client_ip,omitempty"`
	Summary        string         `json:"summary"`
	Evidence       map[string]any `json:"evidence" jsonschema:"the figures behind the alert"`
	Suspended      bool           `json:"suspended" jsonschema:"the alert revoked the API key (GATEHOUSE_ALERT_SUSPEND)"`
	AcknowledgedAt *time.Time     `json:"acknowledged_at,omitempty"`
	AcknowledgedBy string         `json:"acknowledged_by,omitempty"`
}

func toAlert(a *store.StoredAlert) *alertOut {
	o := &alertOut{ID: a.ID, AuditID: a.AuditID, At: a.At, Kind: a.Kind, Subject: a.Subject, APIKeyID: a.APIKeyID, ClientIP: a.ClientIP,
		Summary: a.Summary, Suspended: a.Suspended, AcknowledgedAt: a.AcknowledgedAt, AcknowledgedBy: a.AcknowledgedBy}
	if err := json.Unmarshal(a.Evidence, &o.Evidence); err != nil || o.Evidence == nil {
		o.Evidence = map[string]any{}
	}
	return o
}

func (o listAlertsOut) Text() string {
	if len(o.Alerts) == 0 {
		return "No alerts match."
	}
	var b strings.Builder
	for _, a := range o.Alerts {
		b.WriteString(alertLine(a))
		b.WriteString("\n")
	}
	if o.NextCursor != "" {
		fmt.Fprintf(&b, "More alerts follow: call again with cursor %q.\n", o.NextCursor)
	}
	return b.String()
}

func alertLine(a *alertOut) string {
	s := fmt.Sprintf("#%d %s %s %s: %s", a.ID, a.At.UTC().Format(time.RFC3339), a.Kind, a.Subject, a.Summary)
	if a.Suspended {
		s += " [key revoked]"
	}
	if a.AcknowledgedAt != nil {
		s += fmt.Sprintf(" [acknowledged by %s]", a.AcknowledgedBy)
	}
	return s
}

type alertPosition struct {
	BeforeID int64 `json:"before"`
}

func listAlertsTool() *Tool {
	spec := adminSpec("list_alerts", "List anomaly alerts",
		"Lists your organisation's anomaly alerts, newest first: a key used from a new network, a burst of denials or failed authentications, "+
			"a volume of calls far above a principal's baseline, an admin action outside its usual hours. Each has its evidence and the id of its record in the audit log.")
	spec.ReadOnly, spec.Idempotent = true, true
	spec.Input = func(s *jsonschema.Schema) {
		kinds := make([]any, len(anomaly.Kinds))
		for i, k := range anomaly.Kinds {
			kinds[i] = string(k)
		}
		s.Properties["kind"].Enum = kinds
		s.Properties["limit"].Minimum = new(1.0)
		s.Properties["limit"].Maximum = new(200.0)
	}
	return newTool(spec, func(ctx context.Context, c *Call, in listAlertsIn) (listAlertsOut, error) {
		f := store.AlertFilter{Open: in.Open, Kind: in.Kind, Subject: in.Subject, Limit: in.Limit}
		if f.Limit == 0 {
			f.Limit = 50
		}
		if in.Cursor != "" {
			var pos alertPosition
			if err := c.Open("alerts", in.Cursor, &pos); err != nil || pos.BeforeID <= 0 {
				return listAlertsOut{}, errCursorRefused
			}
			f.BeforeID = pos.BeforeID
		}
		out := listAlertsOut{Alerts: []*alertOut{}}
		err := c.srv.db.AsAdmin(ctx, c.Tx, c.Tenant, func(a *store.Admin) error {
			as, more, err := a.Alerts(ctx, f)
			if err != nil {
				return err
			}
			for _, a := range as {
				out.Alerts = append(out.Alerts, toAlert(a))
			}
			if more {
				out.NextCursor = c.Seal("alerts", alertPosition{BeforeID: as[len(as)-1].ID})
			}
			return nil
		})
		return out, err
	})
}

type acknowledgeAlertIn struct {
	ID int64 `json:"id" jsonschema:"the alert's id (list_alerts)"`
}

type acknowledgedAlertOut struct {
	Alert *alertOut `json:"alert"`
	// AlreadyAcknowledged: someone acknowledged it before (alert says who
	// and when); this call changed nothing.
	AlreadyAcknowledged bool `json:"already_acknowledged,omitempty"`
}

func (o acknowledgedAlertOut) Text() string {
	if o.AlreadyAcknowledged {
		return "Already acknowledged (nothing changed): " + alertLine(o.Alert)
	}
	return "Acknowledged: " + alertLine(o.Alert)
}

func acknowledgeAlertTool() *Tool {
	spec := adminSpec("acknowledge_alert", "Acknowledge an anomaly alert",
		"Marks an alert as seen, with your name, so that list_alerts with open=true leaves it out. It changes nothing else: a revoked key stays revoked.")
	spec.Idempotent = true
	spec.Input = func(s *jsonschema.Schema) { s.Properties["id"].Minimum = new(1.0) }
	return newTool(spec, func(ctx context.Context, c *Call, in acknowledgeAlertIn) (acknowledgedAlertOut, error) {
		var out acknowledgedAlertOut
		by := c.Principal.Email
		if by == "" {
			by = c.Principal.Subject
		}
		err := c.srv.db.AsAdmin(ctx, c.Tx, c.Tenant, func(a *store.Admin) error {
			al, already, err := a.AcknowledgeAlert(ctx, in.ID, by)
			if err == nil {
				out.Alert, out.AlreadyAcknowledged = toAlert(al), already
			}
			return err
		})
		if errors.Is(err, store.ErrNotFound) {
			return out, fmt.Errorf("%w: %w", &userError{msg: fmt.Sprintf("no alert %d in %s", in.ID, c.Tenant.Key)}, store.ErrNotFound)
		}
		return out, err
	})
}
