package store

import (
	"context"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
)

// DailyUsage is the calls of one day, tool and decision.
type DailyUsage struct {
	Day      time.Time
	Tool     string
	Decision string
	Calls    int64
}

// FindDailyUsage sums the audit records of the tenant of tx per UTC day,
// tool and decision over the last days days (aggregated records count
// their count).
func FindDailyUsage(ctx context.Context, tx pgx.Tx, days int) ([]DailyUsage, error) {
	rows, _ := tx.Query(ctx, `SELECT date_trunc('day', at AT TIME ZONE 'UTC'), tool, decision, sum(count)::bigint
		FROM audit_log WHERE at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - make_interval(days => $1)
		GROUP BY 1, 2, 3 ORDER BY 1`, days-1)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (DailyUsage, error) {
		var u DailyUsage
		err := r.Scan(&u.Day, &u.Tool, &u.Decision, &u.Calls)
		return u, err
	})
}

// SignIn is an MCP client a person authorised: one refresh-token family.
type SignIn struct {
	Family       string
	ClientID     string
	ClientName   string
	RedirectHost string
	Scope        string
	Since        time.Time // first token
	LastUsed     time.Time // latest refresh
}

// SignIns lists the live sign-ins (refresh families with a token that can
// still be used) of subject, the caller's own, most recently used first.
// Sign-ins belong to a person rather than a tenant: the statement names
// the subject.
func (a *Admin) SignIns(ctx context.Context, subject string) ([]*SignIn, error) {
	rows, _ := a.tx.Query(ctx, `SELECT r.family, r.client_id, coalesce(c.name, ''), coalesce(c.redirect_uris, '{}'),
			(array_agg(r.scope ORDER BY r.created_at DESC))[1], min(r.created_at), max(r.created_at)
		FROM gatehouse.oauth_refresh_tokens r LEFT JOIN gatehouse.oauth_clients c ON c.id = r.client_id
		WHERE r.identity->>'sub' = $1
		GROUP BY r.family, r.client_id, c.name, c.redirect_uris
		HAVING bool_or(r.revoked_at IS NULL AND r.used_at IS NULL AND r.expires_at > now())
		ORDER BY max(r.created_at) DESC`, subject)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*SignIn, error) {
		var s SignIn
		var redirects []string
		err := r.Scan(&s.Family, &s.ClientID, &s.ClientName, &redirects, &s.Scope, &s.Since, &s.LastUsed)
		if len(redirects) > 0 {
			if u, perr := url.Parse(redirects[0]); perr == nil {
				s.RedirectHost = u.Host
			}
		}
		return &s, err
	})
}

// RevokeSignIn revokes family if it is subject's (ErrNotFound otherwise):
// its refresh tokens stop working at once, its access tokens on every
// replica within a second (a minute at most, if a replica missed the
// notification: the validation cache's lifetime).
func (a *Admin) RevokeSignIn(ctx context.Context, subject, family string) error {
	tag, err := a.tx.Exec(ctx, `UPDATE gatehouse.oauth_refresh_tokens SET revoked_at = now()
		WHERE family = $1 AND identity->>'sub' = $2 AND revoked_at IS NULL`, family, subject)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	// Its access tokens die too (authserver.Verifier checks the family);
	// every replica forgets the ones it validated.
	return a.db.notify(ctx, a.tx, Invalidation{Kind: InvalidateFamily, ID: family})
}
