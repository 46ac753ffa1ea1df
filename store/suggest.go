package store

import (
	"context"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// Suggestions for MCP completion (the prompts' arguments): names a caller
// may type, read in the caller's tenant. Matching ignores case; names that
// start with what was typed come first, then names that contain it.

// MaxSuggestions is the most values one completion answer may carry (MCP
// specification, server utilities, completion: "values … must not exceed
// 100 items").
const MaxSuggestions = 100

// Suggestions are the values matching a partial input, best first, and
// whether more match than were returned.
type Suggestions struct {
	Values []string
	More   bool
}

// SuggestProjectNames returns the names of active projects that start with
// or contain typed (ignoring case), at most limit (1 to MaxSuggestions).
func SuggestProjectNames(ctx context.Context, tx pgx.Tx, typed string, limit int) (Suggestions, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	return suggest(ctx, tx, `SELECT name FROM projects
		WHERE NOT archived AND strpos(lower(name), lower(@typed)) > 0
		ORDER BY strpos(lower(name), lower(@typed)) = 1 DESC, lower(name), id LIMIT @limit`, typed, limit)
}

// TagSuggestionWindow is how many of the newest documents SuggestTags
// reads tags from: no index can list the tags in use, so the cost of a
// suggestion is bounded by reading a window (by the created_at index), not
// every document (measured in one run at 50,000 documents: 2 to 3 ms
// against 92 to 105 ms for a whole scan; at 1,000 documents 1.1 to 1.2
// times the whole scan's 1.2 to 1.6 ms).
const TagSuggestionWindow = 2000

// SuggestTags returns the tags of the TagSuggestionWindow newest documents
// that start with or contain typed (ignoring case; tags are stored in
// lower case), most used first among equals, at most limit (1 to
// MaxSuggestions).
func SuggestTags(ctx context.Context, tx pgx.Tx, typed string, limit int) (Suggestions, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	return suggest(ctx, tx, `SELECT t FROM (SELECT tags FROM documents ORDER BY created_at DESC, id DESC LIMIT `+strconv.Itoa(TagSuggestionWindow)+`) d, unnest(d.tags) t
		WHERE strpos(t, lower(@typed)) > 0
		GROUP BY t ORDER BY strpos(t, lower(@typed)) = 1 DESC, count(*) DESC, t LIMIT @limit`, typed, limit)
}

func suggest(ctx context.Context, tx pgx.Tx, q, typed string, limit int) (Suggestions, error) {
	limit = min(max(limit, 1), MaxSuggestions)
	rows, _ := tx.Query(ctx, q, pgx.NamedArgs{"typed": typed, "limit": limit + 1})
	values, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return Suggestions{}, err
	}
	if len(values) > limit {
		return Suggestions{Values: values[:limit], More: true}, nil
	}
	return Suggestions{Values: values}, nil
}

// FindActiveProjectByName returns the active project named name (ignoring
// case; active names are unique that way), or ErrNotFound.
func FindActiveProjectByName(ctx context.Context, tx pgx.Tx, name string) (*Project, error) {
	ctx = GenericPlan(ctx) // one plan whatever the arguments (plans.go)
	return scanProject(tx.QueryRow(ctx, "SELECT "+projectColumns+" FROM projects WHERE NOT archived AND lower(name) = lower($1)", name))
}
