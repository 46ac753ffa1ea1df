// Package console is Gatehouse's web console at /console: members connect
// their MCP clients and manage their own API keys; org admins manage
// members and keys and read the audit log and usage; operators (named by
// GATEHOUSE_OPERATORS) suspend, export and delete tenants.
//
// It is server-rendered HTML (html/template) with every asset embedded;
// it works with scripts off except the copy buttons. Sessions are rows in
// PostgreSQL (any replica serves any page) behind a __Host- cookie; every
// form carries a CSRF token bound to the session and to the form's action.
//
// The console owns no authorization of its own: people sign in through the
// authorization server's upstream logins and tenant placement
// (authserver.BeginFirstParty), and every read or change of tenant data is
// a tool call made through [Tools] — the MCP server's registry — so the
// same role × scope rule decides it and the same audit record, marked
// via=console, commits with it in the tenant's transaction.
//
// One file per page or action, named after what it does (key_list.go shows
// the list, key_save.go handles the form's POST); routes.go lists them.
// It imports identity, tenancy, store and internal/httpx, never mcp.
package console
