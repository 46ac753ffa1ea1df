package console

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// memberList shows every member (list_members) with role changes, removal
// and restore, and who joins automatically.
func (c *Console) memberList(ctx echo.Context) error {
	return c.memberPage(ctx, http.StatusOK, "", "")
}

func (c *Console) memberPage(ctx echo.Context, status int, notice, problem string) error {
	var out membersOut
	if err := c.invoke(ctx, "list_members", nil, &out); err != nil {
		return err
	}
	v := visitorOf(ctx)
	domains, role := c.opts.Tenancy.JoinsBy(v.m.Tenant.Key)
	vw := c.newView(ctx, "Members", "members")
	vw.Notice, vw.Error = notice, problem
	vw.Data = struct {
		Members []memberOut
		Roles   []string
		Org     bool
		Tenant  string
		Self    string
		Fresh   bool
		Domains []string
		Default string
	}{out.Members, roleOptions(tenancy.Admin), v.m.Tenant.Kind == tenancy.Organization, v.m.Tenant.Key, v.m.MemberID, c.fresh(v), domains, string(role)}
	return c.render(ctx, status, "members", vw)
}
