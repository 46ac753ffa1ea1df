package mcp_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestResourceCanonical: a resource indicator is compared after RFC 3986
// normalisation (scheme and host case, default port, dot segments,
// percent-encoding), at authorization, code exchange and refresh; any
// other resource is refused with invalid_target.
func TestResourceCanonical(t *testing.T) {
	g := newGatehouse(t, withSignIn(newCorpSSO(t).up))
	c := g.register(t, loopbackRedirect)
	b := newBrowser(t, g.ts.URL)
	hostPort := strings.TrimPrefix(g.ts.URL, "http://")
	accepted := []string{
		"HTTP://" + hostPort + "/mcp",
		"Http://" + hostPort + "/%6Dcp",
		"http://" + hostPort + "/./mcp",
		"http://" + hostPort + "/x/../mcp",
	}
	for _, res := range accepted {
		p := b.signIn(c.authURL(func(q url.Values) { q.Set("resource", res) }), c.redirect)
		code, _, _ := codeFrom(t, p)
		tr := c.exchange(code, func(f url.Values) { f.Set("resource", res) })
		if tr.AccessToken == "" {
			t.Errorf("resource %q at the token endpoint: %+v", res, tr)
			continue
		}
		if status, _ := g.mcpStatus(t, tr.AccessToken); status != 200 {
			t.Errorf("resource %q: the token is refused: %d", res, status)
		}
		if tr := c.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tr.RefreshToken}, "resource": {res}}); tr.AccessToken == "" {
			t.Errorf("resource %q at refresh: %+v", res, tr)
		}
	}
	port := hostPort[strings.LastIndex(hostPort, ":")+1:]
	for _, res := range []string{
		"http://" + hostPort + "/MCP",
		"http://" + hostPort + "/mcp/",
		"https://" + hostPort + "/mcp",
		"http://localhost:" + port + "/mcp",
		"http://" + hostPort + "1/mcp",
		"http://" + hostPort + "/mcp#frag",
		"/mcp",
	} {
		p := b.visit(c.authURL(func(q url.Values) { q.Set("resource", res) }), "http://127.0.0.1:40123/")
		if u, _ := url.Parse(p.location); u == nil || u.Query().Get("error") != "invalid_target" {
			t.Errorf("resource %q: %q, want invalid_target", res, p.location)
		}
	}
}

// TestMetadataDocuments: the protected resource metadata is served in its
// path-inserted form only, names the resource it was derived from and
// every scope; the root form and OpenID discovery are not served.
func TestMetadataDocuments(t *testing.T) {
	g := newGatehouse(t, withSignIn(newCorpSSO(t).up))
	status, _, prm := getJSON(t, g.ts.URL+"/.well-known/oauth-protected-resource/mcp", nil)
	scopes, _ := json.Marshal(prm["scopes_supported"])
	if status != 200 || prm["resource"] != g.url || string(scopes) != `["mcp:read","mcp:write","mcp:admin"]` {
		t.Errorf("protected resource metadata: %d %v", status, prm)
	}
	for _, p := range []string{"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/other",
		"/.well-known/openid-configuration", "/.well-known/openid-configuration/mcp"} {
		if status, _, _ := getJSON(t, g.ts.URL+p, nil); status != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", p, status)
		}
	}
}

// TestRegistrationReturnsMetadata: the registration response carries every
// registered field as stored (RFC 7591 §3.2.1); unknown fields are ignored
// and malformed ones refused.
func TestRegistrationReturnsMetadata(t *testing.T) {
	g := newGatehouse(t, withSignIn(newCorpSSO(t).up))
	register := func(body string) (int, map[string]any) {
		res, err := http.Post(g.ts.URL+"/oauth/register", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out
	}
	sent := map[string]any{
		"redirect_uris": []any{loopbackRedirect}, "client_name": "Full Client", "client_uri": "https://client.example/",
		"logo_uri": "https://client.example/logo.png", "scope": "mcp:read mcp:write offline_access",
		"contacts": []any{"ops@client.example"}, "tos_uri": "https://client.example/tos", "policy_uri": "https://client.example/privacy",
		"software_id": "4NRB1-0XZABZI9E6-5SM3R", "software_version": "2.1", "token_endpoint_auth_method": "none",
		"grant_types": []any{"authorization_code", "refresh_token"}, "response_types": []any{"code"},
	}
	body, _ := json.Marshal(map[string]any{"jwks_uri": "https://client.example/jwks", "x_unknown": 1, "redirect_uris": sent["redirect_uris"]})
	body = append(body[:len(body)-1], ',')
	rest, _ := json.Marshal(sent)
	body = append(body, rest[1:]...) // sent's fields plus unknown ones
	status, out := register(string(body))
	if status != http.StatusCreated {
		t.Fatalf("register: %d %v", status, out)
	}
	for k, v := range sent {
		want, _ := json.Marshal(v)
		if got, _ := json.Marshal(out[k]); string(got) != string(want) {
			t.Errorf("response %s = %s, want %s", k, got, want)
		}
	}
	for _, k := range []string{"jwks_uri", "x_unknown", "client_secret"} {
		if _, ok := out[k]; ok {
			t.Errorf("response has %s: %v", k, out[k])
		}
	}
	// As stored: the stored client has the same metadata.
	stored, err := g.db.FindClient(context.Background(), out["client_id"].(string))
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	_ = json.Unmarshal(stored.Metadata, &meta)
	if meta["logo_uri"] != sent["logo_uri"] || meta["scope"] != sent["scope"] || stored.ClientURI != sent["client_uri"] {
		t.Errorf("stored: %+v %v", stored, meta)
	}
	// A minimal registration answers the fields the server set.
	status, out = register(`{"redirect_uris":["` + loopbackRedirect + `"]}`)
	if status != http.StatusCreated || out["token_endpoint_auth_method"] != "client_secret_basic" || out["client_secret"] == nil || out["logo_uri"] != nil {
		t.Errorf("minimal registration: %d %v", status, out)
	}
	for _, bad := range []string{
		`{"redirect_uris":["` + loopbackRedirect + `"],"logo_uri":"javascript:alert(1)"}`,
		`{"redirect_uris":["` + loopbackRedirect + `"],"tos_uri":"/relative"}`,
		`{"redirect_uris":["` + loopbackRedirect + `"],"client_uri":"data:text/html,x"}`,
		`{"redirect_uris":["` + loopbackRedirect + `"],"contacts":"ops@client.example"}`,
		`{"redirect_uris":["` + loopbackRedirect + `"],"contacts":["a","b","c","d","e","f","g","h","i","j","k"]}`,
		`{"redirect_uris":["` + loopbackRedirect + `"],"scope":"` + strings.Repeat("x", 1001) + `"}`,
	} {
		if status, out := register(bad); status != http.StatusBadRequest || out["error"] != "invalid_client_metadata" {
			t.Errorf("%.80s: %d %v", bad, status, out)
		}
	}
}
