package authserver

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// token is the token endpoint: authorization_code and refresh_token grants.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the request body is not a form")
		return
	}
	c, err := s.authenticateClient(r)
	if err != nil {
		// invalid_client makes clients register again.
		w.Header().Set("WWW-Authenticate", `Basic realm="gatehouse"`)
		oauthError(w, http.StatusUnauthorized, "invalid_client", "unknown client or wrong credentials")
		return
	}
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		s.exchangeCode(w, r, c)
	case "refresh_token":
		s.refresh(w, r, c)
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "authorization_code and refresh_token only")
	}
}

func (s *Server) exchangeCode(w http.ResponseWriter, r *http.Request, c *Client) {
	f := r.PostForm
	code, err := s.cfg.Store.UseCode(r.Context(), hash(f.Get("code")))
	switch {
	case errors.Is(err, ErrUsed):
		// A code replayed: whoever holds the tokens it gave may be an
		// attacker; revoke them (RFC 6749 §4.1.2, OAuth 2.1 §4.1.3).
		if rerr := s.cfg.Store.RevokeFamily(r.Context(), code.Family); rerr != nil {
			s.log.Error("oauth: revoking a replayed code's tokens failed", "error", rerr)
		}
		s.log.Warn("oauth: authorization code replayed; its tokens are revoked", "client_id", c.ID)
		oauthError(w, http.StatusBadRequest, "invalid_grant", "the authorization code was already used")
		return
	case err != nil:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "unknown or expired authorization code")
		return
	}
	verifier := f.Get("code_verifier")
	switch {
	case time.Now().After(code.ExpiresAt):
		oauthError(w, http.StatusBadRequest, "invalid_grant", "the authorization code has expired")
	case code.ClientID != c.ID:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "the authorization code was issued to another client")
	case f.Get("redirect_uri") != code.RedirectURI:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri does not match the authorization request")
	case len(verifier) < 43 || len(verifier) > 128 || subtle.ConstantTimeCompare([]byte(s256(verifier)), []byte(code.CodeChallenge)) != 1:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "the PKCE code_verifier does not match the code_challenge")
	case f.Get("resource") != "" && !s.sameResource(f.Get("resource")):
		oauthError(w, http.StatusBadRequest, "invalid_target", "the resource does not match the authorization request")
	default:
		// Place the person again: they may have been removed since consent.
		place, err := s.cfg.Place(r.Context(), code.Identity.Principal(strings.Fields(code.Scope), time.Now().Add(s.cfg.TokenTTL)))
		if err != nil {
			s.placeFailed(w, err, code.Family)
			return
		}
		scope, ok := capScope(code.Scope, place)
		if !ok {
			oauthError(w, http.StatusBadRequest, "invalid_scope", "your role ("+place.Role+") no longer allows any of the scopes granted ("+code.Scope+")")
			return
		}
		_ = s.cfg.Store.TouchClient(r.Context(), c.ID)
		s.respond(w, r, c, code.Identity, place.Tenant, scope, code.Resource, code.Family)
	}
}

func (s *Server) refresh(w http.ResponseWriter, r *http.Request, c *Client) {
	f := r.PostForm
	if res := f.Get("resource"); res != "" && !s.sameResource(res) {
		oauthError(w, http.StatusBadRequest, "invalid_target", "the resource must be "+s.cfg.Resource)
		return
	}
	// Scope tokens Gatehouse does not offer (offline_access, openid, …)
	// are left out, as at /oauth/authorize; a request naming only such
	// tokens keeps the scope granted.
	want, _ := identity.ParseScope(f.Get("scope"))
	secret := randomString(32)
	next := &Refresh{Hash: hash(secret), ExpiresAt: time.Now().Add(s.cfg.RefreshTTL)}
	// A bad request is refused before the token is used up.
	old, err := s.cfg.Store.RotateRefresh(r.Context(), hash(f.Get("refresh_token")), next, func(old *Refresh) error {
		if old.ClientID != c.ID {
			return errOtherClient
		}
		for _, sc := range want {
			if !slices.Contains(strings.Fields(old.Scope), sc) {
				return errWiden
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, ErrUsed):
		s.log.Warn("oauth: refresh token reused; its family is revoked", "client_id", c.ID)
		oauthError(w, http.StatusBadRequest, "invalid_grant", "the refresh token was already used; every token of this sign-in is revoked, sign in again")
		return
	case errors.Is(err, errOtherClient):
		// Another client holds this client's token: it was stolen.
		s.log.Warn("oauth: refresh token presented by another client; its family is revoked", "client_id", c.ID)
		_ = s.cfg.Store.RevokeFamily(r.Context(), old.Family)
		oauthError(w, http.StatusBadRequest, "invalid_grant", "the refresh token was issued to another client")
		return
	case errors.Is(err, errWiden):
		oauthError(w, http.StatusBadRequest, "invalid_scope", "a refresh cannot widen the scopes granted ("+old.Scope+")")
		return
	case err != nil:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "unknown, expired or revoked refresh token")
		return
	}
	scope := old.Scope
	if len(want) > 0 {
		scope = strings.Join(want, " ")
	}
	// The person may have been removed since: place them again.
	place, err := s.cfg.Place(r.Context(), old.Identity.Principal(strings.Fields(scope), time.Now().Add(s.cfg.TokenTTL)))
	if err != nil {
		s.placeFailed(w, err, old.Family)
		return
	}
	// A role lowered since consent narrows what a refresh gives (the
	// refresh token keeps its grant: a role raised again restores it).
	scope, ok := capScope(scope, place)
	if !ok {
		oauthError(w, http.StatusBadRequest, "invalid_scope", "your role ("+place.Role+") no longer allows any of the scopes granted ("+old.Scope+")")
		return
	}
	s.tokens(w, c, old.Identity, place.Tenant, scope, secret, old.Family)
}

// placeFailed answers a token request whose person could not be placed: a
// refusal ends the sign-in (its tokens are revoked); a passing failure
// asks the client to try again.
func (s *Server) placeFailed(w http.ResponseWriter, err error, family string) {
	if !errors.Is(err, ErrRefused) {
		s.log.Error("oauth: placing a person in their tenant failed", "error", err)
		oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "try again shortly")
		return
	}
	if rerr := s.cfg.Store.RevokeFamily(context.Background(), family); rerr != nil {
		s.log.Error("oauth: revoking a refused person's tokens failed", "error", rerr)
	}
	oauthError(w, http.StatusBadRequest, "invalid_grant", err.Error())
}

var (
	errOtherClient = errors.New("issued to another client")
	errWiden       = errors.New("scope widened")
)

// respond issues the first access and refresh tokens of a family.
func (s *Server) respond(w http.ResponseWriter, r *http.Request, c *Client, id Identity, tenant, scope, resource, family string) {
	secret := randomString(32)
	err := s.cfg.Store.CreateRefresh(r.Context(), &Refresh{Hash: hash(secret), Family: family, ClientID: c.ID, Resource: resource,
		Scope: scope, Identity: id, ExpiresAt: time.Now().Add(s.cfg.RefreshTTL)})
	if err != nil {
		s.log.Error("oauth: storing a refresh token failed", "error", err)
		oauthError(w, http.StatusInternalServerError, "server_error", "try again")
		return
	}
	s.tokens(w, c, id, tenant, scope, secret, family)
}

func (s *Server) tokens(w http.ResponseWriter, c *Client, id Identity, tenant, scope, refresh, family string) {
	access, err := s.issue(id, tenant, c.ID, scope, family, s.cfg.TokenTTL)
	if err != nil {
		s.log.Error("oauth: signing an access token failed", "error", err)
		oauthError(w, http.StatusInternalServerError, "server_error", "try again")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": access, "token_type": "Bearer", "expires_in": int(s.cfg.TokenTTL.Seconds()),
		"refresh_token": refresh, "scope": scope,
	})
}

// revoke is RFC 7009: revoking a refresh token revokes its family, and
// with it the family's access tokens (see Verifier.Verify); the answer is
// 200 for any token, as the RFC asks.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the request body is not a form")
		return
	}
	c, err := s.authenticateClient(r)
	if err != nil {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "unknown client or wrong credentials")
		return
	}
	// Only the client a token was issued to may revoke it (RFC 7009 §2.1);
	// an unknown token, or another client's, is answered 200 all the same.
	if t := r.PostForm.Get("token"); t != "" {
		if err := s.cfg.Store.RevokeRefresh(r.Context(), hash(t), c.ID); err != nil && !errors.Is(err, ErrNotFound) {
			s.log.Error("oauth: revoking a token failed", "error", err)
			oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "try again")
			return
		}
	}
	w.WriteHeader(http.StatusOK)
}

func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
