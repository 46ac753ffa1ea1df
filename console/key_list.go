package console

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// keyList lists the visitor's own keys, with the form to make one.
func (c *Console) keyList(ctx echo.Context) error {
	return c.keyPage(ctx, http.StatusOK, nil, "", "")
}

// keyPage renders My keys; created is a key just made (its secret shown
// this once).
func (c *Console) keyPage(ctx echo.Context, status int, created *createdKey, notice, problem string) error {
	var out keysOut
	if err := c.invoke(ctx, "list_my_api_keys", nil, &out); err != nil {
		return err
	}
	v := visitorOf(ctx)
	vw := c.newView(ctx, "My keys", "keys")
	vw.Notice, vw.Error = notice, problem
	vw.Data = struct {
		Keys    []keyOut
		Created *createdKey
		Roles   []string
		Scopes  []string
		Fresh   bool
	}{out.Keys, created, roleOptions(v.m.Role), v.p.Scopes, c.fresh(v)}
	return c.render(ctx, status, "keys", vw)
}
