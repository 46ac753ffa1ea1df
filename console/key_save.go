package console

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
)

// keyForm is the create-a-key form.
type keyForm struct {
	Name          string   `json:"name"`
	Role          string   `json:"role"`
	Scopes        []string `json:"scopes"`
	ExpiresInDays int      `json:"expires_in_days,omitempty"`
	// AllowedNetworks: the text area's entries (one per line or separated
	// by commas or spaces); the tool checks them and names a bad one.
	AllowedNetworks []string `json:"allowed_networks,omitempty"`
}

func parseKeyForm(ctx echo.Context) (keyForm, string) {
	f := keyForm{Name: strings.TrimSpace(ctx.FormValue("name")), Role: ctx.FormValue("role")}
	params, _ := ctx.FormParams()
	f.Scopes = params["scope"]
	f.AllowedNetworks = splitNetworks(ctx.FormValue("allowed_networks"))
	if d := ctx.FormValue("expires_in_days"); d != "" && d != "0" {
		n, err := strconv.Atoi(d)
		if err != nil {
			return f, "Expiry must be a number of days."
		}
		f.ExpiresInDays = n
	}
	return f, ""
}

// keySave creates a key of the visitor's own (create_my_api_key: never
// above their role or beyond their scopes) and shows its secret once.
func (c *Console) keySave(ctx echo.Context) error {
	f, problem := parseKeyForm(ctx)
	if problem != "" {
		return c.keyPage(ctx, http.StatusBadRequest, nil, "", problem)
	}
	var out createdKey
	if msg, err := shown(c.invoke(ctx, "create_my_api_key", f, &out)); err != nil {
		return err
	} else if msg != "" {
		return c.keyPage(ctx, http.StatusBadRequest, nil, "", msg)
	}
	return c.keyPage(ctx, http.StatusOK, &out, "Key created. Copy its secret now: it is shown only this once.", "")
}
