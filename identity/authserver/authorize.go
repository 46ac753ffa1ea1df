package authserver

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// requestTTL bounds how long a person may take to sign in and consent.
const requestTTL = 15 * time.Minute

// cookieName binds an authorization request to the browser that started it.
// Over https it is a __Host- cookie (Secure, Path=/, no Domain).
func (s *Server) cookieName() string {
	if strings.HasPrefix(s.cfg.Issuer, "https://") {
		return "__Host-gatehouse-signin"
	}
	return "gatehouse-signin"
}

func (s *Server) setBrowserCookie(w http.ResponseWriter, value string) {
	http.SetCookie(w, &http.Cookie{Name: s.cookieName(), Value: value, Path: "/", HttpOnly: true,
		Secure: strings.HasPrefix(s.cfg.Issuer, "https://"), SameSite: http.SameSiteLaxMode, MaxAge: int(requestTTL.Seconds())})
}

// browserOf checks that the request comes from the browser that started it.
func (s *Server) browserOf(r *http.Request, req *Request) (string, bool) {
	c, err := r.Cookie(s.cookieName())
	if err != nil || c.Value == "" {
		return "", false
	}
	return c.Value, hmac.Equal(hash(c.Value), req.BrowserHash)
}

// csrfToken is the consent form's token: tied to the browser's cookie and
// the request, so another site cannot forge a consent.
func csrfToken(browser, requestID string) string {
	m := hmac.New(sha256.New, []byte(browser))
	m.Write([]byte("consent:" + requestID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// authorize checks an authorization request and shows the sign-in page.
// Until the client and redirect URI are known good, errors are shown here;
// after, they go back to the client (RFC 6749 §4.1.2.1).
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	clientID, redirectURI := q.Get("client_id"), q.Get("redirect_uri")
	if clientID == "" || redirectURI == "" {
		s.errorPage(w, http.StatusBadRequest, "The application's sign-in link is incomplete (client_id and redirect_uri are required).")
		return
	}
	c, err := s.client(r.Context(), clientID)
	if err != nil {
		s.log.Info("oauth: authorize for an unknown client", "client_id", truncate(clientID, 200), "error", err)
		s.errorPage(w, http.StatusBadRequest, "This application is not registered with this server, or its client metadata document could not be used.")
		return
	}
	if !redirectAllowed(c.RedirectURIs, redirectURI) {
		s.errorPage(w, http.StatusBadRequest, "This application asked to return to an address it did not register.")
		return
	}
	back := func(code, description string) { s.redirectError(w, r, redirectURI, q.Get("state"), code, description) }
	switch {
	case q.Get("response_type") != "code":
		back("unsupported_response_type", "only the authorization code flow (response_type=code) is supported")
		return
	case q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256":
		back("invalid_request", "PKCE with code_challenge_method=S256 is required")
		return
	case q.Get("resource") != "" && !s.sameResource(q.Get("resource")):
		back("invalid_target", "the resource must be "+s.cfg.Resource)
		return
	}
	scope, ok := s.grantable(q.Get("scope"))
	if !ok {
		back("invalid_scope", "none of the scopes asked for is offered here; the scopes offered are: "+strings.Join(s.cfg.Scopes, " "))
		return
	}
	browser := randomString(24)
	req := &Request{ID: randomString(24), ClientID: c.ID, RedirectURI: redirectURI, State: q.Get("state"), Scope: scope,
		Resource: s.cfg.Resource, CodeChallenge: q.Get("code_challenge"), BrowserHash: hash(browser), ExpiresAt: time.Now().Add(requestTTL)}
	if err := s.cfg.Store.CreateRequest(r.Context(), req); err != nil {
		s.unavailable(w, "storing an authorization request", err)
		return
	}
	s.setBrowserCookie(w, browser)
	s.signInPage(w, c, req)
}

// redirectError sends an authorization error back to the client.
func (s *Server) redirectError(w http.ResponseWriter, r *http.Request, redirectURI, state, code, description string) {
	u, _ := url.Parse(redirectURI)
	v := u.Query()
	v.Set("error", code)
	v.Set("error_description", description)
	if state != "" {
		v.Set("state", state)
	}
	v.Set("iss", s.cfg.Issuer)
	u.RawQuery = v.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// pending loads the request a sign-in step belongs to, checking it is alive
// and this browser's.
func (s *Server) pending(w http.ResponseWriter, r *http.Request, req *Request, err error) (browser string, ok bool) {
	if err != nil || time.Now().After(req.ExpiresAt) {
		s.errorPage(w, http.StatusBadRequest, "This sign-in has expired or is unknown. Start again from your application.")
		return "", false
	}
	browser, ok = s.browserOf(r, req)
	if !ok {
		s.errorPage(w, http.StatusBadRequest, "This sign-in was started in another browser (or your browser refused our cookie). Start again from your application.")
	}
	return browser, ok
}

func (s *Server) upstream(name string) *Upstream {
	for _, u := range s.cfg.Upstreams {
		if u.Name == name {
			return u
		}
	}
	return nil
}

func (s *Server) oauthConfig(ctx context.Context, u *Upstream) (*oauth2.Config, error) {
	cfg := u.OAuth
	cfg.RedirectURL = s.cfg.Issuer + "/oauth/callback/" + u.Name
	if cfg.Endpoint.AuthURL == "" && u.Endpoint != nil {
		ep, err := u.Endpoint(ctx)
		if err != nil {
			return nil, err
		}
		cfg.Endpoint = ep
	}
	return &cfg, nil
}

// login sends the person to the provider they chose.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	req, err := s.cfg.Store.FindRequest(r.Context(), r.URL.Query().Get("request"))
	if _, ok := s.pending(w, r, req, err); !ok {
		return
	}
	u := s.upstream(r.PathValue("provider"))
	if u == nil {
		s.errorPage(w, http.StatusNotFound, "Unknown sign-in provider.")
		return
	}
	s.toUpstream(w, r, req, u)
}

// toUpstream records which provider a sign-in goes to, with fresh state
// and PKCE verifier, and sends the browser there. Every sign-in — an MCP
// client's and a first-party page's — leaves through here.
func (s *Server) toUpstream(w http.ResponseWriter, r *http.Request, req *Request, u *Upstream) {
	cfg, err := s.oauthConfig(r.Context(), u)
	if err != nil {
		s.log.Warn("oauth: provider endpoints unavailable", "provider", u.Name, "error", err)
		s.errorPage(w, http.StatusServiceUnavailable, u.Label+" cannot be reached right now; please try again.")
		return
	}
	req.Upstream, req.UpstreamState, req.UpstreamVerifier = u.Name, randomString(24), oauth2.GenerateVerifier()
	if err := s.cfg.Store.UpdateRequest(r.Context(), req); err != nil {
		s.unavailable(w, "storing sign-in state", err)
		return
	}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(req.UpstreamVerifier)}
	for k, v := range u.AuthParams {
		opts = append(opts, oauth2.SetAuthURLParam(k, v))
	}
	http.Redirect(w, r, cfg.AuthCodeURL(req.UpstreamState, opts...), http.StatusFound)
}

// callback learns who signed in, places them, and asks for consent (or
// goes on, when they consented to this client and these scopes before). A
// first-party sign-in (the console) is handed over instead.
func (s *Server) callback(w http.ResponseWriter, r *http.Request) {
	req, err := s.cfg.Store.FindRequestByUpstreamState(r.Context(), r.URL.Query().Get("state"))
	browser, ok := s.pending(w, r, req, err)
	if !ok {
		return
	}
	p, place, ok := s.signedIn(w, r, req)
	if !ok {
		return
	}
	if req.ClientID == firstPartyClient {
		s.handOff(w, r, req, p, place)
		return
	}
	// Consent is asked for exactly the scopes requested that the person's
	// role can use: an admin tool's scope means nothing to a viewer.
	scope, ok := capScope(req.Scope, place)
	if !ok {
		s.redirectError(w, r, req.RedirectURI, req.State, "invalid_scope",
			"as "+place.Role+" in "+place.Tenant+" you can use none of the scopes asked for ("+req.Scope+")")
		return
	}
	id := identityOf(p)
	req.Identity, req.Scope = &id, scope
	if err := s.cfg.Store.UpdateRequest(r.Context(), req); err != nil {
		s.unavailable(w, "storing sign-in state", err)
		return
	}
	if done, _ := s.cfg.Store.Consented(r.Context(), id.Subject, req.ClientID, req.Scope); done {
		s.grant(w, r, req)
		return
	}
	c, err := s.client(r.Context(), req.ClientID)
	if err != nil {
		s.errorPage(w, http.StatusBadRequest, "This application is no longer registered.")
		return
	}
	s.consentPage(w, c, req, place, csrfToken(browser, req.ID))
}

// signedIn finishes the upstream step of a sign-in: the provider's answer
// is checked, exchanged, the person identified with the same verifier as
// their directly presented tokens, and placed in their tenant with the
// same rules (and words) as a request to /mcp. On failure it has answered
// (back to the client, or a page for a first-party sign-in).
func (s *Server) signedIn(w http.ResponseWriter, r *http.Request, req *Request) (*identity.Principal, Placement, bool) {
	q := r.URL.Query()
	u := s.upstream(r.PathValue("provider"))
	if u == nil || u.Name != req.Upstream {
		s.errorPage(w, http.StatusBadRequest, "This sign-in came back from another provider than it went to.")
		return nil, Placement{}, false
	}
	if e := q.Get("error"); e != "" {
		s.refuseSignIn(w, r, req, "access_denied", u.Label+" did not sign you in ("+truncate(e, 100)+")")
		return nil, Placement{}, false
	}
	p, err := s.identify(r.Context(), u, q.Get("code"), req.UpstreamVerifier)
	if err != nil {
		s.log.Info("oauth: upstream sign-in failed", "provider", u.Name, "error", err)
		if errors.Is(err, identity.ErrUnavailable) {
			s.errorPage(w, http.StatusServiceUnavailable, u.Label+" cannot be reached right now; please try again.")
		} else {
			s.errorPage(w, http.StatusBadRequest, "Gatehouse could not confirm who you are with "+u.Label+": "+identity.Reason(err))
		}
		return nil, Placement{}, false
	}
	place, err := s.cfg.Place(r.Context(), p)
	if err != nil {
		if !errors.Is(err, ErrRefused) {
			s.unavailable(w, "placing a person in their tenant", err)
			return nil, Placement{}, false
		}
		s.refuseSignIn(w, r, req, "access_denied", err.Error())
		return nil, Placement{}, false
	}
	return p, place, true
}

// refuseSignIn ends a sign-in the person cannot complete: back to the MCP
// client with an error (RFC 6749 §4.1.2.1), or a page saying why for a
// first-party sign-in.
func (s *Server) refuseSignIn(w http.ResponseWriter, r *http.Request, req *Request, code, description string) {
	if req.ClientID == firstPartyClient {
		_ = s.cfg.Store.DeleteRequest(r.Context(), req.ID)
		s.errorPage(w, http.StatusForbidden, "You cannot sign in: "+description+".")
		return
	}
	s.redirectError(w, r, req.RedirectURI, req.State, code, description)
}

// identify exchanges the upstream code and learns who it is for; the
// upstream token goes no further.
func (s *Server) identify(ctx context.Context, u *Upstream, code, verifier string) (*identity.Principal, error) {
	cfg, err := s.oauthConfig(ctx, u)
	if err != nil {
		return nil, err
	}
	if u.HTTPClient != nil {
		ctx = context.WithValue(ctx, oauth2.HTTPClient, u.HTTPClient)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
			return nil, identity.Invalid("the sign-in code was refused")
		}
		return nil, errors.Join(identity.ErrUnavailable, err)
	}
	return u.Identify(ctx, tok)
}

// consent records the person's decision.
func (s *Server) consent(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, http.StatusBadRequest, "Malformed form.")
		return
	}
	req, err := s.cfg.Store.FindRequest(r.Context(), r.PostForm.Get("request"))
	browser, ok := s.pending(w, r, req, err)
	if !ok {
		return
	}
	if req.Identity == nil || !hmac.Equal([]byte(r.PostForm.Get("csrf")), []byte(csrfToken(browser, req.ID))) {
		s.errorPage(w, http.StatusForbidden, "This consent did not come from the page Gatehouse showed you.")
		return
	}
	if r.PostForm.Get("decision") != "allow" {
		_ = s.cfg.Store.DeleteRequest(r.Context(), req.ID)
		s.redirectError(w, r, req.RedirectURI, req.State, "access_denied", "you declined")
		return
	}
	if err := s.cfg.Store.SaveConsent(r.Context(), req.Identity.Subject, req.ClientID, req.Scope); err != nil {
		s.unavailable(w, "storing sign-in state", err)
		return
	}
	s.grant(w, r, req)
}

// grant issues the authorization code and returns to the client.
func (s *Server) grant(w http.ResponseWriter, r *http.Request, req *Request) {
	code := randomString(32)
	err := s.cfg.Store.CreateCode(r.Context(), &Code{Hash: hash(code), ClientID: req.ClientID, RedirectURI: req.RedirectURI,
		CodeChallenge: req.CodeChallenge, Resource: req.Resource, Scope: req.Scope, Identity: *req.Identity,
		Family: randomString(16), ExpiresAt: time.Now().Add(time.Minute)})
	if err == nil {
		err = s.cfg.Store.DeleteRequest(r.Context(), req.ID)
	}
	if err != nil {
		s.unavailable(w, "storing sign-in state", err)
		return
	}
	u, _ := url.Parse(req.RedirectURI)
	v := u.Query()
	v.Set("code", code)
	if req.State != "" {
		v.Set("state", req.State)
	}
	v.Set("iss", s.cfg.Issuer)
	u.RawQuery = v.Encode()
	http.SetCookie(w, &http.Cookie{Name: s.cookieName(), Value: "", Path: "/", MaxAge: -1, Secure: strings.HasPrefix(s.cfg.Issuer, "https://"), HttpOnly: true})
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// unavailable answers a step that failed on our side (logged, with what
// was being done), asking the person to try again.
func (s *Server) unavailable(w http.ResponseWriter, doing string, err error) {
	s.log.Error("oauth: "+doing+" failed", "error", err)
	s.errorPage(w, http.StatusServiceUnavailable, "Sign-in is unavailable right now; please try again.")
}
