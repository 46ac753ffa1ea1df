package mcp

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are Gatehouse's Prometheus series. Every label has a bounded set
// of values: route patterns, registered tool names, fixed outcome words.
type metrics struct {
	reg          *prometheus.Registry
	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
	toolCalls    *prometheus.CounterVec
	toolDuration *prometheus.HistogramVec
	prompts      *prometheus.CounterVec // prompts/get and completion/complete (prompts.go)
	authFailures *prometheus.CounterVec
	rateLimited  *prometheus.CounterVec
	busy         *prometheus.CounterVec
	unavailable  *prometheus.CounterVec
	connsRefused prometheus.Counter
	alerts       *prometheus.CounterVec // anomaly alerts (alerts.go)
	suspensions  *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_http_requests_total", Help: "HTTP requests by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gatehouse_http_request_duration_seconds", Help: "HTTP request latency by route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"route"}),
		connsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_connections_refused_total", Help: "Connections closed on accept: their client address already had the most connections still sending a request.",
		}),
		toolCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_tool_calls_total", Help: "MCP tool calls by tool and outcome.",
		}, []string{"tool", "outcome"}),
		toolDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gatehouse_tool_call_duration_seconds", Help: "MCP tool call latency by tool.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 30},
		}, []string{"tool"}),
		prompts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_prompt_requests_total", Help: "MCP prompts/get and completion/complete requests by method, prompt and outcome.",
		}, []string{"method", "prompt", "outcome"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_auth_failures_total", Help: "Requests refused before reaching a tool, by OAuth error code.",
		}, []string{"code"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_rate_limited_total", Help: "Requests refused with 429, by the limit's scope (tenant, principal, client).",
		}, []string{"scope"}),
		busy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_concurrency_refused_total", Help: "Calls refused with 429 by a concurrency bound, by its scope (tenant, principal, server).",
		}, []string{"scope"}),
		unavailable: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_unavailable_total", Help: "Requests answered 503 because a dependency could not be reached, by dependency (database, identity_provider; database_lock: the database answered, but the tenant's tables were locked by another session for longer than Gatehouse waits).",
		}, []string{"dependency"}),
	}
	m.alerts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_alerts_total", Help: "Anomaly alerts raised by this replica's detector passes, by kind.",
	}, []string{"kind"})
	m.suspensions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_alert_suspensions_total", Help: "API keys revoked by an anomaly alert (GATEHOUSE_ALERT_SUSPEND), by the alert's kind.",
	}, []string{"kind"})
	m.reg.MustRegister(m.alerts, m.suspensions)
	m.reg.MustRegister(m.httpRequests, m.httpDuration, m.toolCalls, m.toolDuration, m.prompts, m.authFailures, m.rateLimited, m.busy, m.unavailable, m.connsRefused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) toolCall(tool, outcome string, d time.Duration) {
	m.toolCalls.WithLabelValues(tool, outcome).Inc()
	m.toolDuration.WithLabelValues(tool).Observe(d.Seconds())
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// methodLabel keeps the method label bounded.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodDelete, http.MethodOptions, http.MethodHead, http.MethodPut, http.MethodPatch:
		return m
	}
	return "OTHER"
}
