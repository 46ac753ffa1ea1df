package console

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// searchShow shows whether semantic search is on for the organisation,
// since when and by whom turned on (the setting set_semantic_search
// changes).
func (c *Console) searchShow(ctx echo.Context) error {
	return c.searchPage(ctx, http.StatusOK, "", "")
}

// searchSave turns semantic search on or off (set_semantic_search: the
// tool's role × scope rule and audit record).
func (c *Console) searchSave(ctx echo.Context) error {
	on := ctx.FormValue("enabled") == "true"
	msg, err := shown(c.invoke(ctx, "set_semantic_search", map[string]bool{"enabled": on}, nil))
	if err != nil {
		return err
	}
	if msg != "" {
		return c.searchPage(ctx, http.StatusBadRequest, "", msg)
	}
	notice := "Semantic search is off."
	if on {
		notice = "Semantic search is on: documents are being embedded."
	}
	return c.searchPage(ctx, http.StatusOK, notice, "")
}

func (c *Console) searchPage(ctx echo.Context, status int, notice, problem string) error {
	v := visitorOf(ctx)
	on, by, at, err := c.opts.DB.SemanticSearchEnabled(ctx.Request().Context(), v.m.Tenant.ID)
	if err != nil {
		return c.unavailable(ctx, "reading the semantic search setting", err)
	}
	vw := c.newView(ctx, "Semantic search", "search")
	vw.Notice, vw.Error = notice, problem
	vw.Data = struct {
		On     bool
		By     string
		Since  string
		Tenant string
	}{on, by, at.UTC().Format(time.RFC3339), v.m.Tenant.Key}
	return c.render(ctx, status, "search", vw)
}
