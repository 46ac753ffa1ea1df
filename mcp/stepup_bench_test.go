package mcp_test

import (
	"testing"

	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// BenchmarkStepUpPath: whoami through the whole handler with an API key
// (the step-up check reads no body) and with a signed-in admin's token
// holding mcp:read mcp:write (the check reads the body to find the tool,
// since admin tools lie beyond the token's scope), in the same run.
func BenchmarkStepUpPath(b *testing.B) {
	g := newGatehouse(b, withSignIn(newCorpSSO(b).up))
	c := g.register(b, loopbackRedirect)
	_, signedIn := c.signInFor(newBrowser(b, g.ts.URL), "mcp:read mcp:write")
	key := g.key(b, "acme.com", tenancy.Admin, "mcp:read", "mcp:write")
	b.Run("api-key", func(b *testing.B) { benchHandler(b, g.srv.Handler(), "Bearer "+key, "whoami") })
	b.Run("signed-in", func(b *testing.B) { benchHandler(b, g.srv.Handler(), "Bearer "+signedIn.AccessToken, "whoami") })
}
