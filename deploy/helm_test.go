package deploy_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"

	"go.yaml.in/yaml/v3"
)

const chartDir = "deploy/helm/gatehouse"

// chart is the Helm chart's templates parsed with text/template and stubs
// of the Helm and Sprig functions they use (Helm itself is not a
// dependency): enough to render them and check the YAML they produce.
type chart struct {
	tmpl   *template.Template
	files  []string // template files that produce manifests
	meta   map[string]any
	values map[string]any
}

func loadChart(t testing.TB) *chart {
	t.Helper()
	c := &chart{}
	var meta struct {
		APIVersion string `yaml:"apiVersion"`
		Name       string `yaml:"name"`
		Version    string `yaml:"version"`
		AppVersion string `yaml:"appVersion"`
	}
	if err := yaml.Unmarshal([]byte(readRepo(t, chartDir+"/Chart.yaml")), &meta); err != nil {
		t.Fatalf("Chart.yaml: %v", err)
	}
	if meta.APIVersion != "v2" || meta.Name == "" || meta.Version == "" || meta.AppVersion == "" {
		t.Fatalf("Chart.yaml: want apiVersion v2, name, version and appVersion; got %+v", meta)
	}
	c.meta = map[string]any{"Name": meta.Name, "Version": meta.Version, "AppVersion": meta.AppVersion}
	if err := yaml.Unmarshal([]byte(readRepo(t, chartDir+"/values.yaml")), &c.values); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}
	c.tmpl = template.New("chart").Option("missingkey=error").Funcs(helmFuncs(func() *template.Template { return c.tmpl }))
	paths, err := filepath.Glob(filepath.Join(repoRoot, chartDir, "templates", "*"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no templates in %s: %v", chartDir, err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(p)
		if _, err := c.tmpl.New(name).Parse(string(b)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if strings.HasSuffix(name, ".yaml") {
			c.files = append(c.files, name)
		}
	}
	return c
}

// helmFuncs are stand-ins for the Helm and Sprig functions of the same
// names, with their argument order.
func helmFuncs(root func() *template.Template) template.FuncMap {
	return template.FuncMap{
		"include": func(name string, data any) (string, error) {
			var b bytes.Buffer
			err := root().ExecuteTemplate(&b, name, data)
			return b.String(), err
		},
		"required": func(msg string, v any) (any, error) {
			if v == nil || v == "" {
				return nil, fmt.Errorf("required: %s", msg)
			}
			return v, nil
		},
		"default": func(def any, given ...any) any {
			if len(given) == 0 || isEmpty(given[0]) {
				return def
			}
			return given[0]
		},
		"toYaml": func(v any) (string, error) {
			var b bytes.Buffer
			enc := yaml.NewEncoder(&b)
			enc.SetIndent(2)
			err := enc.Encode(v)
			return strings.TrimSuffix(b.String(), "\n"), err
		},
		"indent":  indent,
		"nindent": func(n int, s string) string { return "\n" + indent(n, s) },
		"quote": func(v any) string {
			return fmt.Sprintf("%q", fmt.Sprint(v))
		},
		"trunc": func(n int, s string) string {
			if len(s) > n {
				return s[:n]
			}
			return s
		},
		"trimSuffix": func(suffix, s string) string { return strings.TrimSuffix(s, suffix) },
		"contains":   func(substr, s string) bool { return strings.Contains(s, substr) },
		"replace":    func(old, new, s string) string { return strings.ReplaceAll(s, old, new) },
		"add": func(ns ...any) (int64, error) {
			var sum int64
			for _, n := range ns {
				switch n := n.(type) {
				case int:
					sum += int64(n)
				case float64:
					sum += int64(n)
				default:
					return 0, fmt.Errorf("add: %v (%T) is not a number", n, n)
				}
			}
			return sum, nil
		},
	}
}

func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(s, "\n", "\n"+pad)
}

func isEmpty(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Map, reflect.Slice, reflect.String:
		return rv.Len() == 0
	}
	return rv.IsZero()
}

// manifest is one rendered Kubernetes object.
type manifest = map[string]any

// render renders every template with values.yaml overlaid by overrides
// (nested maps merge) and returns the objects by template file.
func (c *chart) render(overrides map[string]any) (map[string][]manifest, error) {
	data := map[string]any{
		"Values":  merge(c.values, overrides),
		"Chart":   c.meta,
		"Release": map[string]any{"Name": "gatehouse", "Namespace": "default", "Service": "Helm", "IsInstall": true, "IsUpgrade": false},
	}
	out := map[string][]manifest{}
	for _, name := range c.files {
		var b bytes.Buffer
		if err := c.tmpl.ExecuteTemplate(&b, name, data); err != nil {
			return nil, err
		}
		for _, doc := range strings.Split(b.String(), "\n---") {
			var m manifest
			if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
				return nil, fmt.Errorf("%s renders invalid YAML: %w\n%s", name, err, doc)
			}
			if m != nil {
				out[name] = append(out[name], m)
			}
		}
	}
	return out, nil
}

func merge(base, over map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if bm, ok := out[k].(map[string]any); ok {
			if om, ok := v.(map[string]any); ok {
				out[k] = merge(bm, om)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// at walks a rendered object along keys and list indexes.
func at(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

var valuesRef = regexp.MustCompile(`\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)`)

// TestHelmValuesReferenced: every .Values.x.y a template names is in
// values.yaml (a typo there renders as nothing in Helm, silently).
func TestHelmValuesReferenced(t *testing.T) {
	c := loadChart(t)
	paths, _ := filepath.Glob(filepath.Join(repoRoot, chartDir, "templates", "*"))
	for _, p := range paths {
		b, _ := os.ReadFile(p)
		for _, m := range valuesRef.FindAllStringSubmatch(string(b), -1) {
			var v any = c.values
			for _, k := range strings.Split(strings.TrimPrefix(m[1], "."), ".") {
				mv, ok := v.(map[string]any)
				if !ok {
					t.Errorf("%s: .Values%s: %s is not a map in values.yaml", filepath.Base(p), m[1], k)
					break
				}
				if v, ok = mv[k]; !ok {
					t.Errorf("%s: .Values%s is not in values.yaml", filepath.Base(p), m[1])
					break
				}
			}
		}
	}
}

// TestHelmRendersObjects: the chart renders with its defaults plus the one
// required setting, and with every optional part switched on, into valid
// YAML objects of the expected kinds and API versions; without publicURL it
// refuses to render.
func TestHelmRendersObjects(t *testing.T) {
	c := loadChart(t)
	if _, err := c.render(nil); err == nil || !strings.Contains(err.Error(), "publicURL") {
		t.Errorf("rendering without publicURL: %v, want an error naming publicURL", err)
	}
	want := map[string]string{
		"deployment.yaml":     "apps/v1 Deployment",
		"service.yaml":        "v1 Service",
		"pdb.yaml":            "policy/v1 PodDisruptionBudget",
		"hpa.yaml":            "autoscaling/v2 HorizontalPodAutoscaler",
		"migration-job.yaml":  "batch/v1 Job",
		"serviceaccount.yaml": "v1 ServiceAccount",
	}
	for _, tc := range []struct {
		name      string
		overrides map[string]any
		absent    []string
	}{
		{"defaults", minimalValues(), []string{"hpa.yaml", "serviceaccount.yaml"}},
		{"everything on", allOnValues(), nil},
	} {
		objs, err := c.render(tc.overrides)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for file, kind := range want {
			n := len(objs[file])
			if n == 0 {
				if !slices.Contains(tc.absent, file) {
					t.Errorf("%s: %s rendered nothing, want a %s", tc.name, file, kind)
				}
				continue
			}
			if got := fmt.Sprint(at(objs[file][0], "apiVersion"), " ", at(objs[file][0], "kind")); n != 1 || got != kind {
				t.Errorf("%s: %s rendered %d object(s), the first %q; want one %s", tc.name, file, n, got, kind)
			}
			if at(objs[file][0], "metadata", "name") == "" {
				t.Errorf("%s: %s has no metadata.name", tc.name, file)
			}
		}
		for _, file := range c.files {
			if _, ok := want[file]; !ok {
				t.Errorf("%s: no expectation for template %s: add it to this test", tc.name, file)
			}
		}
	}
}

func minimalValues() map[string]any {
	return map[string]any{"publicURL": "https://mcp.example.com"}
}

func allOnValues() map[string]any {
	return map[string]any{
		"publicURL":           "https://mcp.example.com",
		"autoscaling":         map[string]any{"enabled": true},
		"serviceAccount":      map[string]any{"create": true, "annotations": map[string]any{"example.com/role": "gatehouse"}},
		"migration":           map[string]any{"serviceAccountName": "migrator"},
		"podAnnotations":      map[string]any{"prometheus.io/scrape": "true"},
		"podLabels":           map[string]any{"team": "platform"},
		"imagePullSecrets":    []any{map[string]any{"name": "registry"}},
		"nodeSelector":        map[string]any{"kubernetes.io/os": "linux"},
		"tolerations":         []any{map[string]any{"key": "dedicated", "operator": "Exists"}},
		"affinity":            map[string]any{"podAntiAffinity": map[string]any{}},
		"preStopSleepSeconds": 0,
		"env":                 map[string]any{"GATEHOUSE_LOG_LEVEL": "debug", "GATEHOUSE_TENANT_BURST": 300},
	}
}
