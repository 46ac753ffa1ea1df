package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// envVar documents one environment variable. The table is the single source
// for parsing, for `gatehouse config` and for the README's list.
type envVar struct {
	Name    string
	Default string
	Secret  bool
	Help    string
}

var envVars = []envVar{
	{Name: "GATEHOUSE_ADDR", Help: "listen address (host:port); default :$PORT, else :8080"},
	{Name: "PORT", Help: "listen port when GATEHOUSE_ADDR is unset (set by Railway, Render, Fly)"},
	{Name: "DATABASE_URL", Secret: true, Help: "PostgreSQL connection string; unset: embedded PostgreSQL in GATEHOUSE_DATA_DIR"},
	{Name: "GATEHOUSE_DATA_DIR", Default: "./.gatehouse", Help: "data directory of the embedded PostgreSQL"},
	{Name: "GATEHOUSE_PUBLIC_URL", Help: "canonical external URL, e.g. https://mcp.example.com; default http://localhost:<port>"},
	{Name: "GATEHOUSE_LOG_LEVEL", Default: "info", Help: "debug, info, warn or error"},
	{Name: "GATEHOUSE_AUTH_CACHE_TTL", Default: "60s", Help: "how long a validated credential is reused (never past its expiry)"},
	{Name: "GATEHOUSE_TOOL_TIMEOUT", Default: "30s", Help: "time limit of one tool call"},
	{Name: "GATEHOUSE_SHUTDOWN_GRACE", Default: "25s", Help: "how long in-flight requests may finish after SIGTERM"},
	{Name: "GATEHOUSE_TRUSTED_PROXIES", Help: "comma-separated CIDRs whose X-Forwarded-For is believed"},
	{Name: "GATEHOUSE_ALLOWED_ORIGINS", Help: "comma-separated origins allowed to call /mcp from a browser"},
	{Name: "GOGC", Default: "400", Help: "Go garbage collector target (Go's own variable); Gatehouse's default is chosen by benchmark"},
	{Name: "GOMEMLIMIT", Help: "Go soft memory limit (Go's own variable); default 90% of the container's memory limit, if any"},
}

// Config is the parsed environment.
type Config struct {
	Addr           string
	PublicURL      string
	DatabaseURL    string
	DataDir        string
	LogLevel       slog.Level
	AuthCacheTTL   time.Duration
	ToolTimeout    time.Duration
	ShutdownGrace  time.Duration
	TrustedProxies []*net.IPNet
	AllowedOrigins []string
}

// loadConfig reads the environment and reports every problem at once.
func loadConfig(getenv func(string) string) (*Config, error) {
	get := func(name string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		for _, e := range envVars {
			if e.Name == name {
				return e.Default
			}
		}
		return ""
	}
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
	}
	c := &Config{DatabaseURL: get("DATABASE_URL"), DataDir: get("GATEHOUSE_DATA_DIR")}

	c.Addr = get("GATEHOUSE_ADDR")
	if c.Addr == "" {
		if port := get("PORT"); port != "" {
			if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
				bad("PORT", "%q is not a port number", port)
			}
			c.Addr = ":" + port
		} else {
			c.Addr = ":8080"
		}
	}
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil {
		bad("GATEHOUSE_ADDR", "%q is not host:port (for example :8080 or 127.0.0.1:8080)", c.Addr)
	}

	c.PublicURL = strings.TrimSuffix(get("GATEHOUSE_PUBLIC_URL"), "/")
	if c.PublicURL == "" && err == nil {
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "localhost"
		}
		c.PublicURL = "http://" + net.JoinHostPort(host, port)
	} else if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		bad("GATEHOUSE_PUBLIC_URL", "%q must be an absolute http(s) URL with no path, such as https://mcp.example.com", c.PublicURL)
	}

	if err := c.LogLevel.UnmarshalText([]byte(get("GATEHOUSE_LOG_LEVEL"))); err != nil {
		bad("GATEHOUSE_LOG_LEVEL", "%q is not debug, info, warn or error", get("GATEHOUSE_LOG_LEVEL"))
	}
	duration := func(name string, dst *time.Duration) {
		d, err := time.ParseDuration(get(name))
		if err != nil || d <= 0 {
			bad(name, "%q is not a positive duration such as 30s or 5m", get(name))
		}
		*dst = d
	}
	duration("GATEHOUSE_AUTH_CACHE_TTL", &c.AuthCacheTTL)
	duration("GATEHOUSE_TOOL_TIMEOUT", &c.ToolTimeout)
	duration("GATEHOUSE_SHUTDOWN_GRACE", &c.ShutdownGrace)

	for _, s := range splitList(get("GATEHOUSE_TRUSTED_PROXIES")) {
		if !strings.Contains(s, "/") {
			if ip := net.ParseIP(s); ip != nil && ip.To4() != nil {
				s += "/32"
			} else {
				s += "/128"
			}
		}
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			bad("GATEHOUSE_TRUSTED_PROXIES", "%q is not an IP address or CIDR", s)
			continue
		}
		c.TrustedProxies = append(c.TrustedProxies, n)
	}
	for _, o := range splitList(get("GATEHOUSE_ALLOWED_ORIGINS")) {
		if u, err := url.Parse(o); err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" {
			bad("GATEHOUSE_ALLOWED_ORIGINS", "%q is not an origin such as https://app.example.com", o)
			continue
		}
		c.AllowedOrigins = append(c.AllowedOrigins, o)
	}
	return c, errors.Join(errs...)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
