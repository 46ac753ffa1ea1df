package authserver

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// register is Dynamic Client Registration (RFC 7591).
func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	if s.cfg.AllowRegistration != nil {
		if ok, retry := s.cfg.AllowRegistration(r.Context(), s.cfg.ClientIP(r)); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(retry.Seconds()))))
			oauthError(w, http.StatusTooManyRequests, "slow_down", "too many registrations from your address; try again later")
			return
		}
	}
	var req struct {
		RedirectURIs            []string `json:"redirect_uris"`
		ClientName              string   `json:"client_name"`
		ClientURI               string   `json:"client_uri"`
		TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
		GrantTypes              []string `json:"grant_types"`
		ResponseTypes           []string `json:"response_types"`
		registeredMetadata
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_client_metadata", "the registration is not a JSON object of client metadata (RFC 7591 §2): "+truncate(err.Error(), 200))
		return
	}
	if err := req.registeredMetadata.check(req.ClientURI); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_client_metadata", err.Error())
		return
	}
	if err := validRedirects(req.RedirectURIs); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_redirect_uri", err.Error())
		return
	}
	for _, g := range req.GrantTypes {
		if g != "authorization_code" && g != "refresh_token" {
			oauthError(w, http.StatusBadRequest, "invalid_client_metadata", "grant type "+g+" is not supported: authorization_code and refresh_token only")
			return
		}
	}
	for _, rt := range req.ResponseTypes {
		if rt != "code" {
			oauthError(w, http.StatusBadRequest, "invalid_client_metadata", "response type "+rt+" is not supported: code only")
			return
		}
	}
	method := req.TokenEndpointAuthMethod
	if method == "" {
		method = "client_secret_basic" // RFC 7591 §2's default
	}
	metadata, _ := json.Marshal(req.registeredMetadata)
	c := &Client{ID: "gh_" + randomString(16), Kind: "dcr", Name: truncate(req.ClientName, 200), RedirectURIs: req.RedirectURIs,
		ClientURI: req.ClientURI, Metadata: metadata}
	var secret string
	switch method {
	case "none":
	case "client_secret_basic", "client_secret_post":
		secret = randomString(32)
		c.SecretHash = hash(secret)
	default:
		oauthError(w, http.StatusBadRequest, "invalid_client_metadata", "token_endpoint_auth_method "+method+" is not supported: none, client_secret_basic or client_secret_post")
		return
	}
	if err := s.cfg.Store.CreateClient(r.Context(), c); err != nil {
		s.log.Error("oauth: registering a client failed", "error", err)
		oauthError(w, http.StatusInternalServerError, "server_error", "registration failed; try again")
		return
	}
	// The response is every registered field as stored (RFC 7591 §3.2.1),
	// including those the server set: the grant and response types it
	// honours for every client, the authentication method.
	out := map[string]any{}
	_ = json.Unmarshal(c.Metadata, &out)
	for k, v := range map[string]any{
		"client_id": c.ID, "client_id_issued_at": time.Now().Unix(), "client_name": c.Name, "redirect_uris": c.RedirectURIs,
		"token_endpoint_auth_method": method, "grant_types": []string{"authorization_code", "refresh_token"}, "response_types": []string{"code"},
	} {
		out[k] = v
	}
	if c.ClientURI != "" {
		out["client_uri"] = c.ClientURI
	}
	if secret != "" {
		out["client_secret"], out["client_secret_expires_at"] = secret, 0
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, out)
}

// registeredMetadata is the client metadata of RFC 7591 §2 that Gatehouse
// keeps without acting on it (beyond showing the name and client_uri): it
// is stored as given and returned as stored. Unknown fields are ignored, as
// §2 asks.
type registeredMetadata struct {
	LogoURI         string   `json:"logo_uri,omitempty"`
	Scope           string   `json:"scope,omitempty"`
	Contacts        []string `json:"contacts,omitempty"`
	TOSURI          string   `json:"tos_uri,omitempty"`
	PolicyURI       string   `json:"policy_uri,omitempty"`
	SoftwareID      string   `json:"software_id,omitempty"`
	SoftwareVersion string   `json:"software_version,omitempty"`
}

// check refuses metadata Gatehouse would not store as given: URLs that are
// not absolute http(s) URLs, overlong values (RFC 7591 §2 leaves limits to
// the server).
func (m *registeredMetadata) check(clientURI string) error {
	for name, v := range map[string]string{"client_uri": clientURI, "logo_uri": m.LogoURI, "tos_uri": m.TOSURI, "policy_uri": m.PolicyURI} {
		if v == "" {
			continue
		}
		if u, err := url.Parse(v); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || len(v) > 2000 {
			return fmt.Errorf("%s %q is not an http or https URL of at most 2000 characters", name, truncate(v, 100))
		}
	}
	switch {
	case len(m.Scope) > 1000:
		return errors.New("scope is longer than 1000 characters")
	case len(m.Contacts) > 10:
		return errors.New("at most 10 contacts")
	case len(m.SoftwareID) > 200 || len(m.SoftwareVersion) > 200:
		return errors.New("software_id and software_version are at most 200 characters")
	}
	for _, c := range m.Contacts {
		if c == "" || len(c) > 320 {
			return errors.New("each contact is between 1 and 320 characters")
		}
	}
	return nil
}

var schemeRe = regexp.MustCompile(`^[a-z][a-z0-9+.-]*$`)

// validRedirects: https anywhere; http only on loopback; private-use
// schemes of native apps (vscode:, cursor:, com.example.app:); never
// javascript:, data:, file: and the like; no fragments.
func validRedirects(uris []string) error {
	if len(uris) == 0 || len(uris) > 20 {
		return errors.New("between 1 and 20 redirect_uris are needed")
	}
	for _, raw := range uris {
		u, err := url.Parse(raw)
		switch {
		case err != nil || u.Scheme == "" || u.Fragment != "" || len(raw) > 2000:
			return fmt.Errorf("redirect URI %q is not an absolute URI without a fragment", raw)
		case u.Scheme == "https":
			if u.Host == "" {
				return fmt.Errorf("redirect URI %q has no host", raw)
			}
		case u.Scheme == "http":
			if !loopbackHost(u.Hostname()) {
				return fmt.Errorf("redirect URI %q: plain http is allowed on loopback addresses only", raw)
			}
		case slices.Contains([]string{"javascript", "data", "file", "vbscript", "about", "blob", "ftp", "ws", "wss"}, u.Scheme) || !schemeRe.MatchString(u.Scheme):
			return fmt.Errorf("redirect URI %q: scheme %s is not allowed", raw, u.Scheme)
		}
	}
	return nil
}

func loopbackHost(h string) bool {
	return h == "localhost" || h == "127.0.0.1" || h == "::1"
}

// redirectAllowed matches a requested redirect URI against the registered
// ones: exactly, except that a loopback http URI may use any port (RFC 8252
// §7.3: native apps listen on an ephemeral port).
func redirectAllowed(registered []string, requested string) bool {
	if slices.Contains(registered, requested) {
		return true
	}
	req, err := url.Parse(requested)
	if err != nil || req.Scheme != "http" || !loopbackHost(req.Hostname()) {
		return false
	}
	for _, r := range registered {
		reg, err := url.Parse(r)
		if err == nil && reg.Scheme == "http" && reg.Hostname() == req.Hostname() && reg.Path == req.Path && reg.RawQuery == req.RawQuery {
			return true
		}
	}
	return false
}

// client finds a client: registered, or an https client_id whose metadata
// document is fetched (and cached) now.
func (s *Server) client(ctx context.Context, id string) (*Client, error) {
	if strings.HasPrefix(id, "https://") {
		return s.metadataClient(ctx, id)
	}
	return s.cfg.Store.FindClient(ctx, id)
}

// authenticateClient checks a token or revocation request's client: public
// clients send only their id; confidential ones their secret too.
func (s *Server) authenticateClient(r *http.Request) (*Client, error) {
	id, secret, basic := r.BasicAuth()
	if !basic {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	} else if u, err := url.QueryUnescape(id); err == nil {
		id = u
	}
	if id == "" {
		return nil, errors.New("no client_id")
	}
	c, err := s.client(r.Context(), id)
	if err != nil {
		return nil, err
	}
	if c.SecretHash != nil {
		if secret == "" || subtle.ConstantTimeCompare(hash(secret), c.SecretHash) != 1 {
			return nil, errors.New("wrong client secret")
		}
	} else if secret != "" {
		return nil, errors.New("a public client has no secret")
	}
	return c, nil
}

// metadataClient resolves a Client ID Metadata Document: the client_id is
// an https URL serving JSON whose client_id is that URL.
func (s *Server) metadataClient(ctx context.Context, id string) (*Client, error) {
	if c, err := s.cfg.Store.FindClient(ctx, id); err == nil && time.Now().Before(c.FetchedUntil) {
		return c, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, id, nil)
	if err != nil {
		return nil, fmt.Errorf("client metadata document %s: %w", id, err)
	}
	req.Header.Set("Accept", "application/json")
	res, err := s.cimd.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client metadata document %s: %w", id, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("client metadata document %s: answered %d", id, res.StatusCode)
	}
	var doc struct {
		ClientID                string   `json:"client_id"`
		ClientName              string   `json:"client_name"`
		ClientURI               string   `json:"client_uri"`
		RedirectURIs            []string `json:"redirect_uris"`
		TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, 64<<10+1))
	if err != nil || len(body) > 64<<10 || json.Unmarshal(body, &doc) != nil {
		return nil, fmt.Errorf("client metadata document %s: not a JSON document under 64 KiB", id)
	}
	switch {
	case doc.ClientID != id:
		return nil, fmt.Errorf("client metadata document %s names client_id %q, not itself", id, doc.ClientID)
	case doc.TokenEndpointAuthMethod != "" && doc.TokenEndpointAuthMethod != "none":
		return nil, fmt.Errorf("client metadata document %s: token_endpoint_auth_method %s is not supported (none only)", id, doc.TokenEndpointAuthMethod)
	}
	if err := validRedirects(doc.RedirectURIs); err != nil {
		return nil, fmt.Errorf("client metadata document %s: %w", id, err)
	}
	c := &Client{ID: id, Kind: "cimd", Name: truncate(doc.ClientName, 200), ClientURI: truncate(doc.ClientURI, 500),
		RedirectURIs: doc.RedirectURIs, FetchedUntil: time.Now().Add(cacheFor(res.Header.Get("Cache-Control")))}
	if err := s.cfg.Store.SaveClient(ctx, c); err != nil {
		return nil, err
	}
	return c, nil
}

// cacheFor honours a document's max-age between 5 minutes and a day.
func cacheFor(cc string) time.Duration {
	for _, d := range strings.Split(cc, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(d), "max-age="); ok {
			if n, err := strconv.Atoi(v); err == nil {
				return min(24*time.Hour, max(5*time.Minute, time.Duration(n)*time.Second))
			}
		}
	}
	return time.Hour
}

// safeClient fetches metadata documents without reaching private, loopback,
// link-local or otherwise internal addresses (checked on the address
// actually dialled, so DNS rebinding cannot slip past), without following
// redirects. dev allows internal addresses.
func safeClient(dev bool) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		if dev {
			return nil
		}
		host, _, err := net.SplitHostPort(address)
		ip := net.ParseIP(host)
		if err != nil || ip == nil || internal(ip) {
			return fmt.Errorf("refusing to fetch from internal address %s", address)
		}
		return nil
	}}
	return &http.Client{
		Timeout:       5 * time.Second,
		Transport:     &http.Transport{DialContext: dialer.DialContext, TLSHandshakeTimeout: 5 * time.Second, ResponseHeaderTimeout: 5 * time.Second},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

var cgnat = &net.IPNet{IP: net.IPv4(100, 64, 0, 0), Mask: net.CIDRMask(10, 32)}

func internal(ip net.IP) bool {
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsMulticast() ||
		ip.IsUnspecified() || ip.IsInterfaceLocalMulticast() || cgnat.Contains(ip) || ip.Equal(net.IPv4bcast) || ip.To4() != nil && ip.To4()[0] == 0
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
