package main

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/identity/apikey"
	"github.com/gatehouse-mcp/gatehouse/identity/auth0"
	"github.com/gatehouse-mcp/gatehouse/identity/authserver"
	"github.com/gatehouse-mcp/gatehouse/identity/github"
	"github.com/gatehouse-mcp/gatehouse/identity/google"
	"github.com/gatehouse-mcp/gatehouse/identity/oidc"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

// providers are the identity providers the environment enables, opened
// (their configuration validated; no network calls yet).
type providers struct {
	google *google.Provider
	auth0  *auth0.Verifier
	github identity.Verifier
	oidc   []*oidc.Verifier
	// signin are the providers people can sign in with from MCP clients
	// (those configured with a client secret), in sign-in page order.
	signin []*authserver.Upstream
}

// fileConfig is GATEHOUSE_CONFIG_FILE: settings that do not fit in one
// environment variable.
type fileConfig struct {
	OIDCIssuers []struct {
		Name       string   `yaml:"name"`
		Issuer     string   `yaml:"issuer"`
		Audiences  []string `yaml:"audiences"`
		EmailClaim string   `yaml:"email_claim"`
		// Sign-in from MCP clients: the client at the issuer, its secret
		// read from the environment variable named here.
		ClientID        string `yaml:"client_id"`
		ClientSecretEnv string `yaml:"client_secret_env"`
		Label           string `yaml:"label"`
	} `yaml:"oidc_issuers"`
}

func readConfigFile(path string) (*fileConfig, error) {
	fc := &fileConfig{}
	if path == "" {
		return fc, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(fc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return fc, nil
}

// loadProviders enables each provider whose required variables are set and
// reports every problem (a provider half-configured, a bad URL, …).
func loadProviders(get func(string) string, insecure bool, fc *fileConfig) (*providers, []error) {
	ps := &providers{}
	var errs []error
	// need reports the required variables of a provider that is partly configured.
	need := func(provider string, names ...string) (enabled bool) {
		var missing []string
		for _, n := range names {
			if get(n) == "" {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 && len(missing) < len(names) {
			errs = append(errs, fmt.Errorf("%s is partly configured: set %s", provider, strings.Join(missing, " and ")))
		}
		return len(missing) == 0
	}
	if need("Google", "GATEHOUSE_GOOGLE_CLIENT_ID") {
		p, err := google.Config{
			ClientID: get("GATEHOUSE_GOOGLE_CLIENT_ID"),
			Issuer:   get("GATEHOUSE_GOOGLE_ISSUER"), TokenInfoURL: get("GATEHOUSE_GOOGLE_TOKENINFO_URL"),
			UserInfoURL: get("GATEHOUSE_GOOGLE_USERINFO_URL"), AllowInsecure: insecure,
		}.Open()
		ps.google, errs = p, appendErr(errs, "GATEHOUSE_GOOGLE_*", err)
		if p != nil && get("GATEHOUSE_GOOGLE_CLIENT_SECRET") != "" {
			ps.signin = append(ps.signin, googleSignIn(p, get("GATEHOUSE_GOOGLE_CLIENT_ID"), get("GATEHOUSE_GOOGLE_CLIENT_SECRET")))
		}
	} else if get("GATEHOUSE_GOOGLE_CLIENT_SECRET") != "" {
		errs = append(errs, errors.New("GATEHOUSE_GOOGLE_CLIENT_SECRET is set without GATEHOUSE_GOOGLE_CLIENT_ID"))
	}
	if need("Auth0", "GATEHOUSE_AUTH0_DOMAIN", "GATEHOUSE_AUTH0_AUDIENCE") {
		v, err := auth0.Config{
			Domain: get("GATEHOUSE_AUTH0_DOMAIN"), Audience: get("GATEHOUSE_AUTH0_AUDIENCE"),
			EmailClaim: get("GATEHOUSE_AUTH0_EMAIL_CLAIM"), Issuer: get("GATEHOUSE_AUTH0_ISSUER"), AllowInsecure: insecure,
		}.Open()
		ps.auth0, errs = v, appendErr(errs, "GATEHOUSE_AUTH0_*", err)
		if v != nil && need("Auth0 sign-in", "GATEHOUSE_AUTH0_CLIENT_ID", "GATEHOUSE_AUTH0_CLIENT_SECRET") {
			ps.signin = append(ps.signin, auth0SignIn(v, get("GATEHOUSE_AUTH0_CLIENT_ID"), get("GATEHOUSE_AUTH0_CLIENT_SECRET"), get("GATEHOUSE_AUTH0_AUDIENCE")))
		}
	} else if get("GATEHOUSE_AUTH0_CLIENT_ID") != "" || get("GATEHOUSE_AUTH0_CLIENT_SECRET") != "" {
		errs = append(errs, errors.New("Auth0 sign-in needs GATEHOUSE_AUTH0_DOMAIN and GATEHOUSE_AUTH0_AUDIENCE"))
	}
	if need("GitHub", "GATEHOUSE_GITHUB_CLIENT_ID", "GATEHOUSE_GITHUB_CLIENT_SECRET") {
		v, err := github.Config{
			ClientID: get("GATEHOUSE_GITHUB_CLIENT_ID"), ClientSecret: get("GATEHOUSE_GITHUB_CLIENT_SECRET"),
			APIURL: get("GATEHOUSE_GITHUB_API_URL"),
		}.Open()
		ps.github, errs = v, appendErr(errs, "GATEHOUSE_GITHUB_*", err)
		web, werr := url.Parse(get("GATEHOUSE_GITHUB_WEB_URL"))
		if werr != nil || (web.Scheme != "https" && !(insecure && web.Scheme == "http")) || web.Host == "" {
			errs = append(errs, fmt.Errorf("GATEHOUSE_GITHUB_WEB_URL: %q must be an https URL such as https://github.com", get("GATEHOUSE_GITHUB_WEB_URL")))
		} else if v != nil {
			ps.signin = append(ps.signin, gitHubSignIn(v, get("GATEHOUSE_GITHUB_CLIENT_ID"), get("GATEHOUSE_GITHUB_CLIENT_SECRET"), strings.TrimSuffix(web.String(), "/")))
		}
	}
	if need("OIDC", "GATEHOUSE_OIDC_ISSUER", "GATEHOUSE_OIDC_AUDIENCE") {
		name := get("GATEHOUSE_OIDC_NAME")
		if name == "" {
			name = "oidc"
		}
		cfg := oidc.Config{Name: name, Issuer: get("GATEHOUSE_OIDC_ISSUER"), Audiences: splitList(get("GATEHOUSE_OIDC_AUDIENCE")), AllowInsecure: insecure}
		v, err := cfg.Open()
		if err == nil {
			ps.oidc = append(ps.oidc, v)
		}
		errs = appendErr(errs, "GATEHOUSE_OIDC_*", err)
		if err == nil && need("OIDC sign-in", "GATEHOUSE_OIDC_CLIENT_ID", "GATEHOUSE_OIDC_CLIENT_SECRET") {
			u, err := oidcSignIn(cfg, get("GATEHOUSE_OIDC_CLIENT_ID"), get("GATEHOUSE_OIDC_CLIENT_SECRET"), cmp.Or(get("GATEHOUSE_OIDC_LABEL"), name))
			if err == nil {
				ps.signin = append(ps.signin, u)
			}
			errs = appendErr(errs, "GATEHOUSE_OIDC_CLIENT_ID", err)
		}
	}
	for i, c := range fc.OIDCIssuers {
		where := fmt.Sprintf("GATEHOUSE_CONFIG_FILE oidc_issuers[%d]", i)
		cfg := oidc.Config{Name: c.Name, Issuer: c.Issuer, Audiences: c.Audiences, EmailClaim: c.EmailClaim, AllowInsecure: insecure}
		v, err := cfg.Open()
		if err == nil {
			ps.oidc = append(ps.oidc, v)
		}
		errs = appendErr(errs, where, err)
		switch {
		case err != nil || (c.ClientID == "" && c.ClientSecretEnv == ""):
		case c.ClientID == "" || c.ClientSecretEnv == "" || get(c.ClientSecretEnv) == "":
			errs = append(errs, fmt.Errorf("%s: sign-in needs client_id and client_secret_env naming a set environment variable", where))
		default:
			u, err := oidcSignIn(cfg, c.ClientID, get(c.ClientSecretEnv), cmp.Or(c.Label, c.Name))
			if err == nil {
				ps.signin = append(ps.signin, u)
			}
			errs = appendErr(errs, where, err)
		}
	}
	reserved := []string{"apikey", "google", "github", "auth0", "gatehouse"}
	for _, v := range ps.oidc {
		if slices.Contains(reserved, v.Name()) || strings.ContainsAny(v.Name(), ": ") {
			errs = append(errs, fmt.Errorf("OIDC issuer name %q is reserved or contains ':' or spaces; subjects are <name>:<sub>", v.Name()))
		}
	}
	return ps, errs
}

func appendErr(errs []error, where string, err error) []error {
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", where, err))
	}
	return errs
}

// names lists the enabled providers, for the start-up log.
func (ps *providers) names() []string {
	var n []string
	if ps.google != nil {
		n = append(n, "google")
	}
	if ps.auth0 != nil {
		n = append(n, "auth0")
	}
	if ps.github != nil {
		n = append(n, "github")
	}
	for _, v := range ps.oidc {
		n = append(n, v.Name())
	}
	return n
}

// resolverOptions routes credentials: API keys and opaque provider tokens
// by prefix, JWTs by their exact issuer. Two providers claiming one issuer
// is a configuration error.
func (ps *providers) resolverOptions(apiKeys identity.Verifier, cacheTTL time.Duration, defaultScopes []string) (identity.ResolverOptions, error) {
	opts := identity.ResolverOptions{
		Prefixes:      []identity.PrefixRoute{{Prefix: apikey.Prefix, Verifier: apiKeys}},
		Issuers:       map[string]identity.Verifier{},
		CacheTTL:      cacheTTL,
		DefaultScopes: defaultScopes,
	}
	var errs []error
	route := func(v identity.Verifier, issuers []string) {
		for _, iss := range issuers {
			if _, dup := opts.Issuers[iss]; dup {
				errs = append(errs, fmt.Errorf("two identity providers are configured for issuer %s", iss))
			}
			opts.Issuers[iss] = v
		}
	}
	if ps.google != nil {
		route(ps.google.IDTokens(), ps.google.IDTokens().Issuers())
		opts.Prefixes = append(opts.Prefixes, identity.PrefixRoute{Prefix: google.AccessTokenPrefix, Verifier: ps.google.AccessTokens()})
	}
	if ps.auth0 != nil {
		route(ps.auth0, ps.auth0.Issuers())
	}
	if ps.github != nil {
		for _, p := range github.Prefixes {
			opts.Prefixes = append(opts.Prefixes, identity.PrefixRoute{Prefix: p, Verifier: ps.github})
		}
	}
	for _, v := range ps.oidc {
		route(v, v.Issuers())
	}
	return opts, errors.Join(errs...)
}

// loadPolicy reads the tenancy settings.
func loadPolicy(get func(string) string) (*tenancy.Policy, []error) {
	pol := tenancy.DefaultPolicy()
	var errs []error
	if v := get("GATEHOUSE_CONSUMER_DOMAINS"); v != "" {
		pol.ConsumerDomains = nil
		for _, d := range splitList(v) {
			pol.ConsumerDomains = append(pol.ConsumerDomains, strings.ToLower(d))
		}
	}
	pol.Signup = tenancy.Signup(get("GATEHOUSE_TENANT_SIGNUP"))
	for _, k := range splitList(get("GATEHOUSE_TENANT_ALLOWLIST")) {
		if k == tenancy.AllowPersonal {
			pol.Allowlist = append(pol.Allowlist, k)
			continue
		}
		key, err := tenancy.NormalizeKey(k)
		if err != nil {
			errs = append(errs, fmt.Errorf("GATEHOUSE_TENANT_ALLOWLIST: %w", err))
		}
		pol.Allowlist = append(pol.Allowlist, key)
	}
	for _, pair := range splitList(get("GATEHOUSE_TENANT_ALIASES")) {
		from, to, ok := strings.Cut(pair, "=")
		f, err1 := tenancy.NormalizeKey(from)
		t, err2 := tenancy.NormalizeKey(to)
		if !ok || err1 != nil || err2 != nil {
			errs = append(errs, fmt.Errorf("GATEHOUSE_TENANT_ALIASES: %q is not domain=tenant (such as acme.io=acme.com)", pair))
			continue
		}
		if pol.Aliases == nil {
			pol.Aliases = map[string]string{}
		}
		pol.Aliases[f] = t
	}
	pol.DefaultRole = tenancy.Role(get("GATEHOUSE_DEFAULT_ROLE"))
	if err := pol.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("tenancy: %w", err))
	}
	return pol, errs
}
