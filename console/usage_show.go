package console

import (
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/gatehouse-mcp/gatehouse/store"
)

const usageDays = 30

// usageShow charts the organisation's calls per day (allowed, denied,
// rate-limited) and per tool over the last 30 days, as SVG drawn here
// (no script, no charting library), with the current limits (get_usage).
func (c *Console) usageShow(ctx echo.Context) error {
	var limits struct {
		Tenant struct {
			Limit     string `json:"limit"`
			Remaining int    `json:"remaining"`
		} `json:"tenant"`
		You struct {
			Limit     string `json:"limit"`
			Remaining int    `json:"remaining"`
		} `json:"you"`
		Enforced bool `json:"rate_limits_enforced"`
	}
	if err := c.invoke(ctx, "get_usage", nil, &limits); err != nil {
		return err
	}
	v := visitorOf(ctx)
	var rows []store.DailyUsage
	err := c.opts.DB.WithTenant(ctx.Request().Context(), v.m.Tenant, func(tx pgx.Tx) error {
		var err error
		rows, err = store.FindDailyUsage(ctx.Request().Context(), tx, usageDays)
		return err
	})
	if err != nil {
		return c.unavailable(ctx, "reading usage", err)
	}
	vw := c.newView(ctx, "Usage", "usage")
	vw.Data = struct {
		Limits any
		Daily  chart
		Tools  []toolUsage
	}{limits, dailyChart(rows, time.Now().UTC()), perTool(rows)}
	return c.render(ctx, http.StatusOK, "usage", vw)
}

// chart is a stacked bar chart drawn as SVG rectangles.
type chart struct {
	Width, Height int
	Bars          []bar
	Max           int64
	Total         [3]int64 // allowed, denied, rate-limited
	Labels        []axisLabel
}

type bar struct {
	X, W     int
	Segments []segment
	Title    string
}

type segment struct {
	Y, H  int
	Class string
}

type axisLabel struct {
	X    int
	Text string
}

const (
	chartW, chartH = 600, 160
	barGap         = 2
)

func dailyChart(rows []store.DailyUsage, now time.Time) chart {
	start := now.Truncate(24*time.Hour).AddDate(0, 0, -(usageDays - 1))
	var days [usageDays][3]int64
	ch := chart{Width: chartW, Height: chartH}
	for _, r := range rows {
		i := int(r.Day.Sub(start).Hours() / 24)
		if i < 0 || i >= usageDays {
			continue
		}
		switch r.Decision {
		case store.Allowed:
			days[i][0] += r.Calls
			ch.Total[0] += r.Calls
		case store.Denied:
			days[i][1] += r.Calls
			ch.Total[1] += r.Calls
		case store.RateLimited:
			days[i][2] += r.Calls
			ch.Total[2] += r.Calls
		}
	}
	for _, d := range days {
		ch.Max = max(ch.Max, d[0]+d[1]+d[2])
	}
	bw := chartW / usageDays
	classes := [3]string{"allowed", "denied", "limited"}
	for i, d := range days {
		day := start.AddDate(0, 0, i)
		b := bar{X: i * bw, W: bw - barGap, Title: fmt.Sprintf("%s: %d allowed, %d denied, %d rate-limited", day.Format("Jan 2"), d[0], d[1], d[2])}
		y := chartH
		for k, n := range d {
			if n == 0 || ch.Max == 0 {
				continue
			}
			h := max(1, int(int64(chartH)*n/ch.Max))
			y -= h
			b.Segments = append(b.Segments, segment{Y: y, H: h, Class: classes[k]})
		}
		ch.Bars = append(ch.Bars, b)
		if i%7 == 0 {
			ch.Labels = append(ch.Labels, axisLabel{X: i * bw, Text: day.Format("Jan 2")})
		}
	}
	return ch
}

// toolUsage is one tool's 30-day totals, with its bar's width (percent of
// the busiest tool).
type toolUsage struct {
	Tool                    string
	Allowed, Denied, Limits int64
	Width                   int
}

func perTool(rows []store.DailyUsage) []toolUsage {
	by := map[string]*toolUsage{}
	for _, r := range rows {
		name := r.Tool
		if name == "" {
			name = "(request)"
		}
		t := by[name]
		if t == nil {
			t = &toolUsage{Tool: name}
			by[name] = t
		}
		switch r.Decision {
		case store.Allowed:
			t.Allowed += r.Calls
		case store.Denied:
			t.Denied += r.Calls
		case store.RateLimited:
			t.Limits += r.Calls
		}
	}
	out := make([]toolUsage, 0, len(by))
	var top int64
	for _, t := range by {
		out = append(out, *t)
		top = max(top, t.Allowed+t.Denied+t.Limits)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Allowed+out[i].Denied+out[i].Limits, out[j].Allowed+out[j].Denied+out[j].Limits
		return a > b || a == b && out[i].Tool < out[j].Tool
	})
	for i := range out {
		if top > 0 {
			out[i].Width = int(100 * (out[i].Allowed + out[i].Denied + out[i].Limits) / top)
		}
	}
	return out
}
