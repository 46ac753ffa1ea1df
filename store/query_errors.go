package store

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/jackc/pgx/v5/pgconn"
)

// PostgreSQL's refusals of a query speak of the statement Gatehouse sent,
// which wraps the caller's (see Query). queryRefusal words them in terms of
// the caller's statement; PostgreSQL stays the one that decides.

// wrapped marks an error of the wrapping DECLARE … CURSOR FOR SELECT … FROM
// (<statement>) after PostgreSQL had parsed the statement alone.
type wrapped struct{ err error }

func (w *wrapped) Error() string { return w.err.Error() }
func (w *wrapped) Unwrap() error { return w.err }

const onlyQueries = "only one read-only SELECT, VALUES or TABLE statement is allowed"

// queryRefusal turns PostgreSQL's refusal into a QueryError about the
// caller's statement. inWrapper: the statement parsed alone, the error came
// from the cursor around it.
func queryRefusal(e *pgconn.PgError, inWrapper bool, sql string, lim QueryLimits) *QueryError {
	kw := firstKeyword(sql)
	switch {
	case e.Code == "42601" && strings.Contains(e.Message, "multiple commands"):
		return &QueryError{"one statement only: send a single read-only SELECT, VALUES or TABLE statement (this has more than one, separated by semicolons)"}
	case inWrapper && e.Code == "42601": // a statement, but not a query
		if kw != "" && kw != "SELECT" && kw != "VALUES" && kw != "TABLE" && kw != "WITH" {
			return &QueryError{fmt.Sprintf("%s; %s is not one", onlyQueries, kw)}
		}
		return &QueryError{onlyQueries}
	case e.Code == "25006", // read_only_sql_transaction
		e.Code == "0A000" && strings.Contains(e.Message, "data-modifying"),
		e.Code == "0A000" && strings.Contains(e.Message, "DECLARE CURSOR"): // FOR UPDATE and the like
		return &QueryError{fmt.Sprintf("%s: the statement would change or lock data (%s)", onlyQueries, e.Message)}
	case e.Code == "57014" && strings.Contains(e.Message, "statement timeout"):
		return &QueryError{fmt.Sprintf("the query ran longer than its %s limit and was stopped; narrow it (WHERE, LIMIT) or make it cheaper", seconds(lim.Timeout.Seconds()))}
	}
	return &QueryError{e.Message}
}

// seconds formats a limit in seconds: "5 s", "0.5 s".
func seconds(s float64) string { return strings.TrimSuffix(fmt.Sprintf("%g", s), ".0") + " s" }

// firstKeyword is the statement's first word, upper-cased, after leading
// spaces, parentheses and comments ("" if none).
func firstKeyword(sql string) string {
	for {
		sql = strings.TrimLeftFunc(sql, func(r rune) bool { return unicode.IsSpace(r) || r == '(' })
		switch {
		case strings.HasPrefix(sql, "--"):
			if i := strings.IndexByte(sql, '\n'); i >= 0 {
				sql = sql[i+1:]
				continue
			}
			return ""
		case strings.HasPrefix(sql, "/*"):
			if i := strings.Index(sql, "*/"); i >= 0 {
				sql = sql[i+2:]
				continue
			}
			return ""
		}
		end := strings.IndexFunc(sql, func(r rune) bool { return !unicode.IsLetter(r) && r != '_' })
		if end < 0 {
			end = len(sql)
		}
		return strings.ToUpper(sql[:min(end, 32)])
	}
}
