package authserver

import (
	"html/template"
	"net/http"
	"net/url"
	"strings"
)

// The pages are plain HTML forms and links: no scripts. Their CSP allows
// inline styles only; framing is refused (clickjacking of the consent).
var pages = template.Must(template.New("").Parse(`
{{define "head"}}<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{{.}} · Gatehouse</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem;color:#1f2328}
h1{font-size:1.4rem}.box{border:1px solid #d0d7de;border-radius:8px;padding:1rem 1.25rem;margin:1rem 0}
a.btn,button{display:block;width:100%;box-sizing:border-box;margin:.5rem 0;padding:.7rem;border-radius:6px;border:1px solid #d0d7de;
background:#f6f8fa;font:inherit;text-align:center;text-decoration:none;color:inherit;cursor:pointer}
button.primary{background:#1f883d;color:#fff;border-color:#1f883d}.muted{color:#59636e;font-size:.9rem}code{font-size:.9rem}</style>
</head><body>{{end}}
{{define "signin"}}{{template "head" "Sign in"}}
<h1>Sign in to Gatehouse</h1>
<p><strong>{{.Client}}</strong> wants to connect to Gatehouse on your behalf.</p>
<div class="box">{{range .Providers}}<a class="btn" href="/oauth/login/{{.Name}}?request={{$.Request}}">Continue with {{.Label}}</a>{{end}}</div>
<p class="muted">You will return to <code>{{.RedirectHost}}</code>.</p></body></html>{{end}}
{{define "consent"}}{{template "head" "Allow access"}}
<h1>Allow {{.Client}}?</h1>
<div class="box"><p>Signed in as <strong>{{.Who}}</strong>, in <strong>{{.Tenant}}</strong> as <strong>{{.Role}}</strong>.</p>
<p>{{.Client}} asks to:</p><ul>{{range .Scopes}}<li>{{.}}</li>{{end}}</ul>
<p class="muted">It will return to <code>{{.RedirectHost}}</code>. What it may actually do is also limited by your role.</p></div>
<form method="post" action="/oauth/consent"><input type="hidden" name="request" value="{{.Request}}"><input type="hidden" name="csrf" value="{{.CSRF}}">
<button class="primary" name="decision" value="allow">Allow</button><button name="decision" value="deny">Deny</button></form></body></html>{{end}}
{{define "error"}}{{template "head" "Sign-in problem"}}<h1>Sign-in problem</h1><div class="box"><p>{{.}}</p></div></body></html>{{end}}
`))

var scopeText = map[string]string{
	"mcp:read":  "read your organisation's workspace (mcp:read)",
	"mcp:write": "change your organisation's workspace (mcp:write)",
	"mcp:admin": "administer members, API keys and the audit log (mcp:admin)",
}

func (s *Server) render(w http.ResponseWriter, status int, name string, data any) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	if err := pages.ExecuteTemplate(w, name, data); err != nil {
		s.log.Error("oauth: rendering a page failed", "page", name, "error", err)
	}
}

func (s *Server) errorPage(w http.ResponseWriter, status int, msg string) {
	s.render(w, status, "error", msg)
}

func clientLabel(c *Client) string {
	if c.Name != "" {
		return c.Name
	}
	if u, err := url.Parse(c.ID); err == nil && u.Host != "" {
		return u.Host
	}
	return "An application"
}

func redirectHost(uri string) string {
	if u, err := url.Parse(uri); err == nil && u.Host != "" {
		return u.Scheme + "://" + u.Host
	}
	if u, err := url.Parse(uri); err == nil {
		return u.Scheme + ":"
	}
	return uri
}

func (s *Server) signInPage(w http.ResponseWriter, c *Client, req *Request) {
	s.render(w, http.StatusOK, "signin", map[string]any{
		"Client": clientLabel(c), "Providers": s.cfg.Upstreams, "Request": req.ID, "RedirectHost": redirectHost(req.RedirectURI),
	})
}

func (s *Server) consentPage(w http.ResponseWriter, c *Client, req *Request, place Placement, csrf string) {
	who := req.Identity.Email
	if who == "" {
		who = req.Identity.Subject
	}
	var scopes []string
	for _, sc := range strings.Fields(req.Scope) {
		if t, ok := scopeText[sc]; ok {
			scopes = append(scopes, t)
		} else {
			scopes = append(scopes, sc)
		}
	}
	s.render(w, http.StatusOK, "consent", map[string]any{
		"Client": clientLabel(c), "Who": who, "Tenant": place.Tenant, "Role": place.Role, "Scopes": scopes,
		"RedirectHost": redirectHost(req.RedirectURI), "Request": req.ID, "CSRF": csrf,
	})
}
