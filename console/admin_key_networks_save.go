package console

import (
	"net/http"
	"strings"
	"unicode"

	"github.com/labstack/echo/v4"
)

// splitNetworks reads a networks field as people fill it in: entries one
// per line, or separated by commas, semicolons or spaces. The tool checks
// each entry and names a bad one.
func splitNetworks(field string) []string {
	return strings.FieldsFunc(field, func(r rune) bool { return r == ',' || r == ';' || unicode.IsSpace(r) })
}

// adminKeyNetworksSave replaces where a key of the organisation may be
// used from (set_api_key_networks; an empty field: anywhere).
func (c *Console) adminKeyNetworksSave(ctx echo.Context) error {
	nets := splitNetworks(ctx.FormValue("allowed_networks"))
	if nets == nil {
		nets = []string{}
	}
	args := map[string]any{"id": ctx.Param("id"), "allowed_networks": nets}
	msg, err := shown(c.invoke(ctx, "set_api_key_networks", args, nil))
	if err != nil {
		return err
	}
	if msg != "" {
		return c.adminKeyPage(ctx, http.StatusBadRequest, "", msg)
	}
	return c.adminKeyPage(ctx, http.StatusOK, "Allowed networks changed: they apply from the key's next call, on every server.", "")
}
