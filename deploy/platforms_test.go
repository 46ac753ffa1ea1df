package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
	"go.yaml.in/yaml/v3"
)

// flyConfig holds the fly.toml keys Gatehouse uses, named as in Fly's
// reference (https://fly.io/docs/reference/configuration/); decoding is
// strict, so a misspelt key fails the test instead of being ignored by Fly.
type flyConfig struct {
	App           string `toml:"app"`
	PrimaryRegion string `toml:"primary_region"`
	KillSignal    string `toml:"kill_signal"`
	KillTimeout   string `toml:"kill_timeout"`
	Build         struct {
		Dockerfile string `toml:"dockerfile"`
		Ignorefile string `toml:"ignorefile"`
	} `toml:"build"`
	Deploy struct {
		ReleaseCommand string `toml:"release_command"`
		Strategy       string `toml:"strategy"`
	} `toml:"deploy"`
	Env         map[string]string `toml:"env"`
	HTTPService struct {
		InternalPort       int    `toml:"internal_port"`
		ForceHTTPS         bool   `toml:"force_https"`
		AutoStopMachines   string `toml:"auto_stop_machines"`
		AutoStartMachines  bool   `toml:"auto_start_machines"`
		MinMachinesRunning int    `toml:"min_machines_running"`
		Concurrency        struct {
			Type      string `toml:"type"`
			SoftLimit int    `toml:"soft_limit"`
			HardLimit int    `toml:"hard_limit"`
		} `toml:"concurrency"`
		Checks []struct {
			Method      string `toml:"method"`
			Path        string `toml:"path"`
			Interval    string `toml:"interval"`
			Timeout     string `toml:"timeout"`
			GracePeriod string `toml:"grace_period"`
		} `toml:"checks"`
	} `toml:"http_service"`
	VM []struct {
		Size   string `toml:"size"`
		Memory string `toml:"memory"`
	} `toml:"vm"`
}

var assignment = regexp.MustCompile(`\b([A-Z][A-Z0-9_]+)=`)

// TestFlyToml: the Dockerfile, the release command, port, drain timing,
// checks on real routes, and only real variables (in [env] and in the
// secrets its comments tell the operator to set).
func TestFlyToml(t *testing.T) {
	f := codeFacts(t)
	src := readRepo(t, "fly.toml")
	var c flyConfig
	dec := toml.NewDecoder(strings.NewReader(src))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("fly.toml: %v", err)
	}
	if c.App == "" || c.PrimaryRegion == "" {
		t.Error("fly.toml: app and primary_region must be set")
	}
	if c.Build.Dockerfile != "deploy/Dockerfile" {
		t.Errorf("fly.toml: [build] dockerfile = %q, want deploy/Dockerfile", c.Build.Dockerfile)
	}
	existsInRepo(t, "fly.toml [build]", c.Build.Dockerfile)
	// flyctl uploads the working tree and reads only the context's
	// .dockerignore or [build] ignorefile: it must be set, and keep local
	// state out.
	if c.Build.Ignorefile == "" {
		t.Error("fly.toml: [build] ignorefile is not set: fly deploy would upload .gatehouse and node_modules")
	} else {
		existsInRepo(t, "fly.toml [build] ignorefile", c.Build.Ignorefile)
		checkContextExcludesLocalState(t, "fly.toml [build] ignorefile "+c.Build.Ignorefile, ignorePatterns(t, c.Build.Ignorefile))
	}
	// Fly runs release_command as the image's command, after its ENTRYPOINT
	// (/gatehouse), so it must name the subcommand only.
	release := strings.Fields(c.Deploy.ReleaseCommand)
	if len(release) > 0 && release[0] == "/gatehouse" {
		t.Errorf("fly.toml: release_command %q would run /gatehouse /gatehouse ...: Fly keeps the image's ENTRYPOINT", c.Deploy.ReleaseCommand)
	}
	f.checkCommand(t, "fly.toml release_command", release, "migrate")
	for k := range c.Env {
		f.checkVar(t, "fly.toml [env]", k)
	}
	port := strconv.Itoa(f.port)
	if c.Env["PORT"] != port || c.HTTPService.InternalPort != f.port {
		t.Errorf("fly.toml: [env] PORT = %q and internal_port = %d, want %s", c.Env["PORT"], c.HTTPService.InternalPort, port)
	}
	if c.KillSignal != "SIGTERM" {
		t.Errorf("fly.toml: kill_signal = %q, want SIGTERM (Gatehouse drains on it)", c.KillSignal)
	}
	kill, err := time.ParseDuration(c.KillTimeout)
	if err != nil {
		t.Errorf("fly.toml: kill_timeout = %q, want a duration such as \"30s\"", c.KillTimeout)
	}
	f.checkStopTime(t, "fly.toml kill_timeout", kill)
	hs := c.HTTPService
	if !hs.ForceHTTPS || hs.Concurrency.Type != "requests" || hs.Concurrency.SoftLimit <= 0 || hs.Concurrency.HardLimit < hs.Concurrency.SoftLimit {
		t.Errorf("fly.toml: want force_https and requests concurrency with 0 < soft_limit <= hard_limit, got %+v", hs)
	}
	var paths []string
	for _, ch := range hs.Checks {
		f.checkHealthPath(t, "fly.toml [[http_service.checks]]", ch.Path)
		paths = append(paths, ch.Path)
		for _, d := range []string{ch.Interval, ch.Timeout, ch.GracePeriod} {
			if v, err := time.ParseDuration(d); err != nil || v <= 0 {
				t.Errorf("fly.toml: check %s: %q is not a positive duration", ch.Path, d)
			}
		}
		if ch.Method != "GET" {
			t.Errorf("fly.toml: check %s uses %q, want GET (the routes are GET)", ch.Path, ch.Method)
		}
	}
	if slices.Sort(paths); !slices.Equal(paths, []string{"/healthz", "/readyz"}) {
		t.Errorf("fly.toml: checks on %v, want /healthz and /readyz", paths)
	}
	commented := map[string]bool{}
	for _, line := range strings.Split(src, "\n") {
		if _, comment, ok := strings.Cut(line, "#"); ok {
			for _, m := range assignment.FindAllStringSubmatch(comment, -1) {
				f.checkVar(t, "fly.toml comments", m[1])
				commented[m[1]] = true
			}
		}
	}
	for _, want := range []string{"GATEHOUSE_PUBLIC_URL", "GATEHOUSE_AUDIT_KEY", "DATABASE_URL"} {
		if !commented[want] {
			t.Errorf("fly.toml: its comments do not say to set %s (fly secrets set %s=...)", want, want)
		}
	}
	f.checkEnvTokens(t, "fly.toml", src)
}

// renderBlueprint holds render.yaml's fields, named as in Render's Blueprint
// spec (https://render.com/docs/blueprint-spec); unknown fields fail.
type renderBlueprint struct {
	Services []struct {
		Type                    string      `yaml:"type"`
		Name                    string      `yaml:"name"`
		Runtime                 string      `yaml:"runtime"`
		Plan                    string      `yaml:"plan"`
		Region                  string      `yaml:"region"`
		DockerfilePath          string      `yaml:"dockerfilePath"`
		DockerContext           string      `yaml:"dockerContext"`
		DockerCommand           string      `yaml:"dockerCommand"`
		PreDeployCommand        string      `yaml:"preDeployCommand"`
		HealthCheckPath         string      `yaml:"healthCheckPath"`
		NumInstances            int         `yaml:"numInstances"`
		MaxShutdownDelaySeconds int         `yaml:"maxShutdownDelaySeconds"`
		EnvVars                 []renderEnv `yaml:"envVars"`
	} `yaml:"services"`
	Databases []struct {
		Name                 string   `yaml:"name"`
		DatabaseName         string   `yaml:"databaseName"`
		User                 string   `yaml:"user"`
		Plan                 string   `yaml:"plan"`
		Region               string   `yaml:"region"`
		PostgresMajorVersion string   `yaml:"postgresMajorVersion"`
		IPAllowList          []string `yaml:"ipAllowList"`
	} `yaml:"databases"`
}

type renderEnv struct {
	Key           string `yaml:"key"`
	Value         any    `yaml:"value"`
	GenerateValue bool   `yaml:"generateValue"`
	Sync          *bool  `yaml:"sync"`
	FromDatabase  *struct {
		Name     string `yaml:"name"`
		Property string `yaml:"property"`
	} `yaml:"fromDatabase"`
}

// TestRenderBlueprint: a Docker web service on the Dockerfile, checked on
// /readyz, migrating before each deploy, with its database wired in.
func TestRenderBlueprint(t *testing.T) {
	f := codeFacts(t)
	src := readRepo(t, "render.yaml")
	var bp renderBlueprint
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&bp); err != nil {
		t.Fatalf("render.yaml: %v", err)
	}
	if len(bp.Services) != 1 || len(bp.Databases) != 1 {
		t.Fatalf("render.yaml: %d services and %d databases, want 1 and 1", len(bp.Services), len(bp.Databases))
	}
	s, db := bp.Services[0], bp.Databases[0]
	if s.Type != "web" || s.Runtime != "docker" {
		t.Errorf("render.yaml: type %q runtime %q, want web and docker", s.Type, s.Runtime)
	}
	if s.DockerfilePath != "./deploy/Dockerfile" || s.DockerContext != "." {
		t.Errorf("render.yaml: dockerfilePath %q dockerContext %q, want ./deploy/Dockerfile and . (the repository root)", s.DockerfilePath, s.DockerContext)
	}
	existsInRepo(t, "render.yaml dockerfilePath", strings.TrimPrefix(s.DockerfilePath, "./"))
	f.checkHealthPath(t, "render.yaml healthCheckPath", s.HealthCheckPath, "/readyz")
	f.checkCommand(t, "render.yaml preDeployCommand", strings.Fields(s.PreDeployCommand), "migrate")
	if s.DockerCommand != "" {
		f.checkCommand(t, "render.yaml dockerCommand", strings.Fields(s.DockerCommand), "serve")
	}
	f.checkStopTime(t, "render.yaml maxShutdownDelaySeconds", time.Duration(s.MaxShutdownDelaySeconds)*time.Second)
	env := map[string]renderEnv{}
	for _, e := range s.EnvVars {
		f.checkVar(t, "render.yaml envVars", e.Key)
		env[e.Key] = e
	}
	if e := env["DATABASE_URL"]; e.FromDatabase == nil || e.FromDatabase.Name != db.Name || e.FromDatabase.Property != "connectionString" {
		t.Errorf("render.yaml: DATABASE_URL must come from database %q's connectionString", db.Name)
	}
	if !env["GATEHOUSE_AUDIT_KEY"].GenerateValue {
		t.Error("render.yaml: GATEHOUSE_AUDIT_KEY should be generateValue: true")
	}
	if e := env["GATEHOUSE_PUBLIC_URL"]; e.Sync == nil || *e.Sync {
		t.Error("render.yaml: GATEHOUSE_PUBLIC_URL should be sync: false (the operator sets the https URL)")
	}
	if e, ok := env["PORT"]; ok && fmt.Sprint(e.Value) != strconv.Itoa(f.port) {
		t.Errorf("render.yaml: PORT = %v, want %d", e.Value, f.port)
	}
	if db.DatabaseName == "" || db.User == "" || db.PostgresMajorVersion == "" {
		t.Error("render.yaml: the database needs databaseName, user and postgresMajorVersion")
	}
	f.checkEnvTokens(t, "render.yaml", src)
}

// railwayConfig holds deploy/railway.json, named as in Railway's schema
// (https://railway.com/railway.schema.json); unknown fields fail.
type railwayConfig struct {
	Schema string `json:"$schema"`
	Build  struct {
		Builder        string `json:"builder"`
		DockerfilePath string `json:"dockerfilePath"`
	} `json:"build"`
	Deploy struct {
		StartCommand            string   `json:"startCommand"`
		PreDeployCommand        []string `json:"preDeployCommand"`
		HealthcheckPath         string   `json:"healthcheckPath"`
		HealthcheckTimeout      int      `json:"healthcheckTimeout"`
		RestartPolicyType       string   `json:"restartPolicyType"`
		RestartPolicyMaxRetries int      `json:"restartPolicyMaxRetries"`
		DrainingSeconds         int      `json:"drainingSeconds"`
	} `json:"deploy"`
}

// TestRailwayConfig: the Dockerfile builder, migrate before deploy, serve,
// /readyz, restarts on failure, and a draining time longer than the drain.
func TestRailwayConfig(t *testing.T) {
	f := codeFacts(t)
	src := readRepo(t, "deploy/railway.json")
	var c railwayConfig
	dec := json.NewDecoder(bytes.NewReader([]byte(src)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("deploy/railway.json: %v", err)
	}
	if c.Schema != "https://railway.com/railway.schema.json" {
		t.Errorf("deploy/railway.json: $schema %q", c.Schema)
	}
	if c.Build.Builder != "DOCKERFILE" {
		t.Errorf("deploy/railway.json: builder %q, want DOCKERFILE", c.Build.Builder)
	}
	existsInRepo(t, "deploy/railway.json dockerfilePath", c.Build.DockerfilePath)
	// Railway runs these in exec form in place of the image's ENTRYPOINT.
	f.checkCommand(t, "deploy/railway.json startCommand", strings.Fields(c.Deploy.StartCommand), "serve")
	if len(c.Deploy.PreDeployCommand) != 1 {
		t.Fatalf("deploy/railway.json: preDeployCommand %q, want one command", c.Deploy.PreDeployCommand)
	}
	f.checkCommand(t, "deploy/railway.json preDeployCommand", strings.Fields(c.Deploy.PreDeployCommand[0]), "migrate")
	for _, cmd := range append([]string{c.Deploy.StartCommand}, c.Deploy.PreDeployCommand...) {
		if !strings.HasPrefix(cmd, "/gatehouse ") {
			t.Errorf("deploy/railway.json: %q must start with /gatehouse: Railway replaces the ENTRYPOINT", cmd)
		}
	}
	f.checkHealthPath(t, "deploy/railway.json healthcheckPath", c.Deploy.HealthcheckPath, "/readyz")
	if c.Deploy.HealthcheckTimeout <= 0 || c.Deploy.RestartPolicyType != "ON_FAILURE" || c.Deploy.RestartPolicyMaxRetries <= 0 {
		t.Errorf("deploy/railway.json: want a healthcheckTimeout and ON_FAILURE with retries, got %+v", c.Deploy)
	}
	f.checkStopTime(t, "deploy/railway.json drainingSeconds", time.Duration(c.Deploy.DrainingSeconds)*time.Second)
}

// TestCompose: Gatehouse built from the Dockerfile, on a healthy
// PostgreSQL 16 with a named volume, on the code's port.
func TestCompose(t *testing.T) {
	f := codeFacts(t)
	src := readRepo(t, "deploy/docker-compose.yml")
	var c struct {
		Services map[string]map[string]any `yaml:"services"`
		Volumes  map[string]any            `yaml:"volumes"`
	}
	if err := yaml.Unmarshal([]byte(src), &c); err != nil {
		t.Fatalf("deploy/docker-compose.yml: %v", err)
	}
	pg, gh := c.Services["postgres"], c.Services["gatehouse"]
	if pg == nil || gh == nil {
		t.Fatalf("deploy/docker-compose.yml: want services postgres and gatehouse, got %v", keys(c.Services))
	}
	if img, _ := pg["image"].(string); !strings.HasPrefix(img, "postgres:16") {
		t.Errorf("deploy/docker-compose.yml: postgres image %q, want postgres:16", img)
	}
	if pg["healthcheck"] == nil {
		t.Error("deploy/docker-compose.yml: postgres has no healthcheck (gatehouse waits for it)")
	}
	for _, v := range pg["volumes"].([]any) {
		if name, _, _ := strings.Cut(v.(string), ":"); !hasKey(c.Volumes, name) {
			t.Errorf("deploy/docker-compose.yml: postgres volume %q is not a named volume", name)
		}
	}
	build, _ := gh["build"].(map[string]any)
	if build["context"] != ".." || build["dockerfile"] != "deploy/Dockerfile" {
		t.Errorf("deploy/docker-compose.yml: build %v, want context .. and dockerfile deploy/Dockerfile", build)
	}
	if dep, _ := gh["depends_on"].(map[string]any)["postgres"].(map[string]any); dep["condition"] != "service_healthy" {
		t.Error("deploy/docker-compose.yml: gatehouse must depend on postgres with condition service_healthy")
	}
	env := composeEnv(t, gh["environment"])
	for k := range env {
		f.checkVar(t, "deploy/docker-compose.yml environment", k)
	}
	if !strings.Contains(env["DATABASE_URL"], "@postgres:5432/") {
		t.Errorf("deploy/docker-compose.yml: DATABASE_URL %q does not point at the postgres service", env["DATABASE_URL"])
	}
	port := strconv.Itoa(f.port)
	if env["GATEHOUSE_PUBLIC_URL"] != "http://localhost:"+port {
		t.Errorf("deploy/docker-compose.yml: GATEHOUSE_PUBLIC_URL %q, want http://localhost:%s", env["GATEHOUSE_PUBLIC_URL"], port)
	}
	if p, ok := env["PORT"]; ok && p != port {
		t.Errorf("deploy/docker-compose.yml: PORT %q, want %s", p, port)
	}
	if ports := fmt.Sprint(gh["ports"]); !strings.Contains(ports, ":"+port) || !strings.HasSuffix(strings.Trim(ports, "[]"), ":"+port) {
		t.Errorf("deploy/docker-compose.yml: ports %s, want the container's port %s published", ports, port)
	}
	stop, err := time.ParseDuration(fmt.Sprint(gh["stop_grace_period"]))
	if err != nil {
		t.Errorf("deploy/docker-compose.yml: stop_grace_period %v (compose's default of 10s is shorter than the drain)", gh["stop_grace_period"])
	}
	f.checkStopTime(t, "deploy/docker-compose.yml stop_grace_period", stop)
	f.checkEnvTokens(t, "deploy/docker-compose.yml", src)
}

func hasKey(m map[string]any, k string) bool {
	_, ok := m[k]
	return ok
}

// composeEnv reads an environment block in either of compose's forms.
func composeEnv(t testing.TB, v any) map[string]string {
	out := map[string]string{}
	switch v := v.(type) {
	case map[string]any:
		for k, val := range v {
			out[k] = fmt.Sprint(val)
		}
	case []any:
		for _, e := range v {
			k, val, _ := strings.Cut(fmt.Sprint(e), "=")
			out[k] = val
		}
	default:
		t.Errorf("deploy/docker-compose.yml: gatehouse has no environment")
	}
	return out
}
