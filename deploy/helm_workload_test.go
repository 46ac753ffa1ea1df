package deploy_test

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestHelmDeployment: the server pod runs `serve` on the code's port as a
// non-root, read-only, unprivileged container; its probes use the real
// health routes; it gets time to drain; its environment names only real
// variables.
func TestHelmDeployment(t *testing.T) {
	f := codeFacts(t)
	c := loadChart(t)
	for name, overrides := range map[string]map[string]any{"defaults": minimalValues(), "everything on": allOnValues()} {
		objs, err := c.render(overrides)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		values := merge(c.values, overrides)
		d := objs["deployment.yaml"][0]
		where := name + ": deployment.yaml"
		pod := at(d, "spec", "template", "spec")
		ctr := checkContainer(t, f, where, pod, "serve")
		ports := containerPorts(ctr)
		if ports["http"] != f.port {
			t.Errorf("%s: container port http = %d, want %d", where, ports["http"], f.port)
		}
		for _, p := range []struct{ probe, path string }{{"startupProbe", "/healthz"}, {"livenessProbe", "/healthz"}, {"readinessProbe", "/readyz"}} {
			get := at(ctr, p.probe, "httpGet")
			if get == nil {
				t.Errorf("%s: no %s.httpGet", where, p.probe)
				continue
			}
			f.checkHealthPath(t, where+" "+p.probe, fmt.Sprint(at(get, "path")), p.path)
			if port := resolvePort(at(get, "port"), ports); port != f.port {
				t.Errorf("%s: %s probes port %v (%d), want %d", where, p.probe, at(get, "port"), port, f.port)
			}
		}
		grace := f.grace
		if g, err := time.ParseDuration(envValue(ctr, "GATEHOUSE_SHUTDOWN_GRACE")); err == nil {
			grace = g
		}
		preStop := time.Duration(toInt(at(ctr, "lifecycle", "preStop", "sleep", "seconds"))) * time.Second
		if want := toInt(values["preStopSleepSeconds"]); int(preStop/time.Second) != want {
			t.Errorf("%s: preStop sleep %v, want %ds (preStopSleepSeconds)", where, preStop, want)
		}
		term := time.Duration(toInt(at(pod, "terminationGracePeriodSeconds"))) * time.Second
		if min := preStop + grace + margin; term < min {
			t.Errorf("%s: terminationGracePeriodSeconds %v, want at least %v (preStop %v + drain %v + %v)", where, term, min, preStop, grace, margin)
		}
		autoscaling := at(values, "autoscaling", "enabled") == true
		if replicas := at(d, "spec", "replicas"); autoscaling != (replicas == nil) {
			t.Errorf("%s: replicas %v with autoscaling %v: the HPA owns replicas when it is on", where, replicas, autoscaling)
		}
		if toInt(at(d, "spec", "strategy", "rollingUpdate", "maxUnavailable")) != 0 {
			t.Errorf("%s: rolling updates must not take a pod away before its replacement is ready", where)
		}
		selector := at(d, "spec", "selector", "matchLabels").(map[string]any)
		labels := at(d, "spec", "template", "metadata", "labels").(map[string]any)
		if !matches(selector, labels) {
			t.Errorf("%s: pod labels %v do not match the selector %v", where, labels, selector)
		}
		checkService(t, name, objs, selector, ports)
		checkPolicies(t, name, objs, d, selector)
	}
}

// TestHelmMigrationJob: a pre-install and pre-upgrade hook that runs
// `migrate` once, with the server's environment and security.
func TestHelmMigrationJob(t *testing.T) {
	f := codeFacts(t)
	c := loadChart(t)
	objs, err := c.render(minimalValues())
	if err != nil {
		t.Fatal(err)
	}
	j := objs["migration-job.yaml"][0]
	hook := fmt.Sprint(at(j, "metadata", "annotations", "helm.sh/hook"))
	if hook != "pre-install,pre-upgrade" {
		t.Errorf("migration-job.yaml: helm.sh/hook %q, want pre-install,pre-upgrade", hook)
	}
	pod := at(j, "spec", "template", "spec")
	if at(pod, "restartPolicy") != "Never" {
		t.Errorf("migration-job.yaml: restartPolicy %v, want Never (the Job's backoffLimit retries)", at(pod, "restartPolicy"))
	}
	if at(pod, "serviceAccountName") != nil {
		t.Error("migration-job.yaml: by default the hook must not use the chart's ServiceAccount, which does not exist yet at pre-install")
	}
	checkContainer(t, f, "migration-job.yaml", pod, "migrate")
	selector := at(objs["service.yaml"][0], "spec", "selector").(map[string]any)
	labels, _ := at(j, "spec", "template", "metadata", "labels").(map[string]any)
	if matches(selector, labels) {
		t.Errorf("migration-job.yaml: pod labels %v match the Service's selector: it would get traffic", labels)
	}
	d := objs["deployment.yaml"][0]
	dEnv := at(d, "spec", "template", "spec", "containers", 0, "env")
	jEnv := at(pod, "containers", 0, "env")
	if !reflect.DeepEqual(dEnv, jEnv) {
		t.Errorf("migration-job.yaml: environment %v differs from the server's %v", jEnv, dEnv)
	}
}

// checkContainer checks the pod's only container and returns it.
func checkContainer(t *testing.T, f *facts, where string, pod any, command string) any {
	t.Helper()
	ctrs, _ := at(pod, "containers").([]any)
	if len(ctrs) != 1 {
		t.Fatalf("%s: %d containers, want 1", where, len(ctrs))
	}
	ctr := ctrs[0]
	args, _ := at(ctr, "args").([]any)
	argv := make([]string, len(args))
	for i, a := range args {
		argv[i] = fmt.Sprint(a)
	}
	if at(ctr, "command") != nil {
		t.Errorf("%s: command overrides the image's ENTRYPOINT /gatehouse; set args only", where)
	}
	f.checkCommand(t, where+" args", argv, command)
	for _, e := range at(ctr, "env").([]any) {
		f.checkVar(t, where+" env", fmt.Sprint(at(e, "name")))
	}
	if envValue(ctr, "PORT") != strconv.Itoa(f.port) {
		t.Errorf("%s: PORT %q, want %d", where, envValue(ctr, "PORT"), f.port)
	}
	if envValue(ctr, "GATEHOUSE_PUBLIC_URL") == "" {
		t.Errorf("%s: no GATEHOUSE_PUBLIC_URL", where)
	}
	if at(ctr, "envFrom", 0, "secretRef", "name") == nil {
		t.Errorf("%s: no envFrom secretRef for DATABASE_URL and the other secrets", where)
	}
	if at(pod, "automountServiceAccountToken") != false {
		t.Errorf("%s: automountServiceAccountToken must be false (Gatehouse does not call the Kubernetes API)", where)
	}
	if at(pod, "securityContext", "runAsNonRoot") != true || toInt(at(pod, "securityContext", "runAsUser")) == 0 {
		t.Errorf("%s: the pod must run as a non-root user", where)
	}
	sc := at(ctr, "securityContext")
	drop, _ := at(sc, "capabilities", "drop").([]any)
	if at(sc, "allowPrivilegeEscalation") != false || at(sc, "readOnlyRootFilesystem") != true || !slices.Contains(drop, any("ALL")) {
		t.Errorf("%s: container securityContext %v, want no privilege escalation, a read-only root and ALL capabilities dropped", where, sc)
	}
	return ctr
}

func checkService(t *testing.T, name string, objs map[string][]manifest, selector map[string]any, ports map[string]int) {
	s := objs["service.yaml"][0]
	if !reflect.DeepEqual(at(s, "spec", "selector"), selector) {
		t.Errorf("%s: service selector %v, want the deployment's %v", name, at(s, "spec", "selector"), selector)
	}
	if target := resolvePort(at(s, "spec", "ports", 0, "targetPort"), ports); target != ports["http"] {
		t.Errorf("%s: service targetPort %v is not the container's port", name, at(s, "spec", "ports", 0, "targetPort"))
	}
}

func checkPolicies(t *testing.T, name string, objs map[string][]manifest, d manifest, selector map[string]any) {
	if pdb := objs["pdb.yaml"]; len(pdb) > 0 {
		if !reflect.DeepEqual(at(pdb[0], "spec", "selector", "matchLabels"), selector) || toInt(at(pdb[0], "spec", "minAvailable")) < 1 {
			t.Errorf("%s: the PodDisruptionBudget must select the deployment's pods with minAvailable >= 1", name)
		}
	}
	if hpa := objs["hpa.yaml"]; len(hpa) > 0 {
		ref := at(hpa[0], "spec", "scaleTargetRef")
		if at(ref, "kind") != "Deployment" || at(ref, "name") != at(d, "metadata", "name") {
			t.Errorf("%s: the HPA scales %v, want the deployment", name, ref)
		}
		lo, hi := toInt(at(hpa[0], "spec", "minReplicas")), toInt(at(hpa[0], "spec", "maxReplicas"))
		if lo < 1 || hi < lo || toInt(at(hpa[0], "spec", "metrics", 0, "resource", "target", "averageUtilization")) <= 0 {
			t.Errorf("%s: HPA replicas %d..%d and its CPU target must be set", name, lo, hi)
		}
	}
}

func containerPorts(ctr any) map[string]int {
	out := map[string]int{}
	ports, _ := at(ctr, "ports").([]any)
	for _, p := range ports {
		out[fmt.Sprint(at(p, "name"))] = toInt(at(p, "containerPort"))
	}
	return out
}

// resolvePort turns a port number or a named container port into a number.
func resolvePort(v any, named map[string]int) int {
	if s, ok := v.(string); ok {
		return named[s]
	}
	return toInt(v)
}

func envValue(ctr any, name string) string {
	env, _ := at(ctr, "env").([]any)
	for _, e := range env {
		if at(e, "name") == name {
			return fmt.Sprint(at(e, "value"))
		}
	}
	return ""
}

func toInt(v any) int {
	switch v := v.(type) {
	case int:
		return v
	case float64:
		return int(v)
	case string:
		n, _ := strconv.Atoi(v)
		return n
	}
	return 0
}

// matches reports whether a label selector selects labels.
func matches(selector, labels map[string]any) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}
