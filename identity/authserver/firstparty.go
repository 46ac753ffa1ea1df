package authserver

import (
	"net/http"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// First-party sign-in: Gatehouse's own pages (the console) sign people in
// through exactly the steps an MCP client's sign-in takes — the same
// upstream providers and callback URL (nothing more to register at the
// provider), the same browser binding, PKCE and state, the same identity
// verification and tenant placement (see signedIn) — and instead of
// consent and a code, the person is handed to the page's FirstParty
// function.

// firstPartyClient is the client id of first-party sign-in requests. It
// cannot name a real client: registered ids are random and metadata
// document ids are https URLs.
const firstPartyClient = "gatehouse:first-party"

// FirstParty receives a person who signed in for a first-party page, with
// the placement the usual rules gave them and the state the sign-in began
// with; it answers the browser (typically: start a session, redirect).
type FirstParty func(w http.ResponseWriter, r *http.Request, p *identity.Principal, place Placement, state string)

// Provider is an upstream people can sign in with.
type Provider struct{ Name, Label string }

// Providers lists the upstream providers, in configuration order.
func (s *Server) Providers() []Provider {
	out := make([]Provider, 0, len(s.cfg.Upstreams))
	for _, u := range s.cfg.Upstreams {
		out = append(out, Provider{u.Name, u.Label})
	}
	return out
}

// SetFirstParty sets the receiver of first-party sign-ins. Call it before
// serving.
func (s *Server) SetFirstParty(f FirstParty) { s.firstParty = f }

// BeginFirstParty starts a first-party sign-in at provider: it binds the
// sign-in to this browser (cookie) and redirects to the provider. state
// (at most 2 KB) comes back to the FirstParty function. An unknown
// provider or no FirstParty answers an error page.
func (s *Server) BeginFirstParty(w http.ResponseWriter, r *http.Request, provider, state string) {
	u := s.upstream(provider)
	if u == nil || s.firstParty == nil || len(state) > 2048 {
		s.errorPage(w, http.StatusNotFound, "Unknown sign-in provider.")
		return
	}
	browser := randomString(24)
	req := &Request{ID: randomString(24), ClientID: firstPartyClient, State: state, BrowserHash: hash(browser),
		ExpiresAt: time.Now().Add(requestTTL)}
	if err := s.cfg.Store.CreateRequest(r.Context(), req); err != nil {
		s.unavailable(w, "storing a sign-in request", err)
		return
	}
	s.setBrowserCookie(w, browser)
	s.toUpstream(w, r, req, u)
}

// handOff ends a first-party sign-in: the request is used up and the
// browser's binding cookie cleared before the page takes over.
func (s *Server) handOff(w http.ResponseWriter, r *http.Request, req *Request, p *identity.Principal, place Placement) {
	if err := s.cfg.Store.DeleteRequest(r.Context(), req.ID); err != nil {
		s.unavailable(w, "ending a sign-in", err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: s.cookieName(), Value: "", Path: "/", MaxAge: -1, Secure: strings.HasPrefix(s.cfg.Issuer, "https://"), HttpOnly: true})
	s.firstParty(w, r, p, place, req.State)
}
