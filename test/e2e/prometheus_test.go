//go:build e2e

package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/promtest"
)

// TestPrometheus: a real Prometheus (Debian's, installed by test/tools.sh with promtool) scrapes
// two proxies every second and evaluates deploy/prometheus/alerts.yaml while a scripted set of
// pulls runs: mirror hits after a dead mirror, a miss served by the source, pulls found nowhere,
// a blocked pull, an invalid reference, a source pull under a rule named like a NeverContactSource
// one, a mirror held back, and a refused reload. Then every expression of the dashboard returns
// series, the key panels the expected values, and each alert is in the state the pulls call for:
// the single-event alerts fire, the others (which wait 5 to 15 minutes) are pending.
func TestPrometheus(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus is not installed (test/tools.sh installs Debian's package for promtool): %v", err)
	}
	cleanImages(t)
	deadA := fmt.Sprintf("127.0.0.1:%d/dead-a", env.closedPort) // both refuse connections
	deadB := fmt.Sprintf("127.0.0.1:%d/dead-b", env.closedPort)
	good := env.mirrorLoc("m1")
	prefixB := sourceHost + "/e2e/prom-b"

	// Proxy A never holds a mirror back, so every pull tries its dead mirror first.
	a := startProxyWith(t, registriesConf(
		rule{prefix: sourceHost, mirrors: []mirror{{location: deadA}, {location: good}}},
		// Named like the NeverContactSource rule of the shipped alert, but (as if a drop-in had
		// replaced it) pulling from its location.
		rule{prefix: "registry.k8s.io", location: sourceHost},
		rule{prefix: blockedHost, blocked: true},
	), proxyOpts{args: []string{"--mirror-cooldown", "0"}})
	// Proxy B holds its dead mirror back, and serves its rule's pulls from the source. Its
	// tag-check policy covers a part of the rule no pull goes to: the tag check series exist (at 0)
	// for the dashboard, and the pulls are not checked.
	b := startProxyWith(t, registriesConf(rule{prefix: prefixB, mirrors: []mirror{{location: deadB}}}),
		proxyOpts{args: []string{"--mirror-cooldown", "10m", "--tag-check", prefixB + "/unused=source-required"}})

	prom := startPrometheus(t, promBin, a.metricsAddr, b.metricsAddr)
	// Both targets scraped a few times before any pull: the zero series have samples.
	prom.waitValue(t, `count(up{job="cri-mirror-proxy"} == 1)`, 2)
	// (A: three rules and "none"; B: one rule and "none".)
	prom.waitValue(t, `count(count_over_time(cri_mirror_pulls_total{job="cri-mirror-proxy", result="blocked"}[1m]) >= 3)`, 6)

	for i := range 5 { // a dead mirror, then a hit
		ref := fmt.Sprintf("%s/e2e/prom-hit%d:v1", sourceHost, i)
		a.mustPull(ref, mustPushRandom(t, fmt.Sprintf("%s/m1/e2e/prom-hit%d:v1", env.mirror.host, i)))
	}
	a.mustPull(sourceHost+"/e2e/prom-miss:v1", mustPushRandom(t, env.source.host+"/e2e/prom-miss:v1")) // missing at m1: the source
	for i := range 3 {
		if _, err := a.pull(fmt.Sprintf("%s/e2e/prom-nowhere%d:v1", sourceHost, i)); err == nil {
			t.Fatal("a pull of an image that exists nowhere succeeded")
		}
	}
	a.mustPull("registry.k8s.io/e2e/prom-k8s:v1", mustPushRandom(t, env.source.host+"/e2e/prom-k8s:v1"))
	if _, err := a.pull(blockedHost + "/e2e/prom:v1"); err == nil {
		t.Fatal("a blocked pull succeeded")
	}
	if _, err := a.pull("Not:A:Valid/Reference"); err == nil {
		t.Fatal("a pull of an invalid reference succeeded")
	}
	for i := range 6 { // the first finds the dead mirror, the rest skip it
		ref := fmt.Sprintf("%s/%d:v1", prefixB, i)
		b.mustPull(ref, mustPushRandom(t, fmt.Sprintf("%s/e2e/prom-b/%d:v1", env.source.host, i)))
	}
	// A broken file: refused, the old rules stay.
	a.writeConf("[[registry]]\nprefix = \"x.test\"\nlocation = \"x.test\"\nbogus-key = 1\n")
	if err := a.proc.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}

	const job = `job="cri-mirror-proxy"`
	// Wait until Prometheus has the last counts, then for the alert rules to see them.
	prom.waitValue(t, `sum(cri_mirror_pulls_total{`+job+`})`, 5+1+3+1+1+1+6)
	prom.waitValue(t, `sum(cri_mirror_config_reloads_total{`+job+`, result="failure"})`, 1)
	time.Sleep(3 * time.Second)

	// --- the dashboard ---
	// Panels no pull here can fill, and why: their queries still run.
	noPullHere := map[string]string{
		"Time a checked pull waited for the tag check": "a checked pull asks the source itself, and source.test is reached only through the runtime's hosts; TestTagCheck times one",
	}
	exprs := dashboardExprs(t)
	if len(exprs) < 25 {
		t.Fatalf("found %d dashboard queries, want the 30 or so of deploy/grafana/dashboard.json", len(exprs))
	}
	vars := strings.NewReplacer(`"$job"`, `"cri-mirror-proxy"`, `"$instance"`, `".*"`, `"$registry"`, `".*"`, `"$mirror"`, `".*"`,
		"$__rate_interval", "2m")
	results := map[string][]promSample{}
	for _, e := range exprs {
		q := vars.Replace(e.expr)
		if strings.Contains(q, "$") {
			t.Errorf("panel %q: a variable is left in %s", e.title, q)
			continue
		}
		res, err := prom.query(q)
		if err != nil {
			t.Errorf("panel %q: %s: %v", e.title, q, err)
			continue
		}
		if len(res) == 0 && noPullHere[e.title] == "" {
			t.Errorf("panel %q: %s returns no series", e.title, q)
		}
		results[e.title] = append(results[e.title], res...)
	}
	value := func(panel string, labels map[string]string) (float64, bool) {
		for _, s := range results[panel] {
			if promtest.Matches(s.labels, labels) {
				return s.value, true
			}
		}
		return 0, false
	}
	for _, w := range []struct {
		panel  string
		labels map[string]string
		check  func(float64) bool
		want   string
	}{
		{"Proxies up", nil, func(v float64) bool { return v == 2 }, "2"},
		{"Runtime reachable", nil, func(v float64) bool { return v == 1 }, "1"},
		{"Mirrors held back", nil, func(v float64) bool { return v == 1 }, "1 (dead-b on proxy B)"},
		{"Reload failures (24h)", nil, func(v float64) bool { return v > 0 }, "> 0"},
		{"Aliases", nil, func(v float64) bool { return v == 6 }, "6 (the mirror hits, and the registry.k8s.io pull from source.test)"},
		{"Pull success (1h)", nil, func(v float64) bool { return v > 0 && v < 1 }, "between 0 and 1"},
		{"Pulls by result", map[string]string{"result": "blocked"}, func(v float64) bool { return v > 0 }, "> 0"},
		{"Pulls by result", map[string]string{"result": "invalid"}, func(v float64) bool { return v > 0 }, "> 0"},
		{"Pulls by result", map[string]string{"result": "error"}, func(v float64) bool { return v > 0 }, "> 0"},
		{"Pulls by result", map[string]string{"result": "canceled"}, func(v float64) bool { return v == 0 }, "0 (created at load)"},
		{"Pulls served by the source", map[string]string{"registry": prefixB}, func(v float64) bool { return v > 0 }, "> 0"},
		{"Fallbacks by registry rule", map[string]string{"registry": sourceHost}, func(v float64) bool { return v > 0 }, "> 0"},
		{"Attempts by mirror and result", map[string]string{"mirror": good, "result": "missing"}, func(v float64) bool { return v > 0 }, "> 0"},
		{"Attempts by mirror and result", map[string]string{"mirror": deadB, "result": "skipped"}, func(v float64) bool { return v > 0 }, "> 0"},
		{"Attempt failure ratio by mirror", map[string]string{"mirror": deadA}, func(v float64) bool { return v == 1 }, "1"},
		{"Attempt failure ratio by mirror", map[string]string{"mirror": good}, func(v float64) bool { return v == 0 }, "0 (a miss is not a failure)"},
		{"Mirror health", map[string]string{"mirror": deadB}, func(v float64) bool { return v == 0 }, "0"},
		{"Mirror health", map[string]string{"mirror": good}, func(v float64) bool { return v == 1 }, "1"},
		{"Attempt failures by mirror and reason", map[string]string{"mirror": deadA, "reason": "connection"}, func(v float64) bool { return v > 0 }, "> 0"},
		{"Probes by mirror, mode and result", map[string]string{"mirror": good, "mode": "before", "result": "missing"}, func(v float64) bool { return v > 0 }, "> 0"},
		{"Errors by method", map[string]string{"grpc_method": "PullImage", "grpc_code": "NotFound"}, func(v float64) bool { return v > 0 }, "> 0"},
	} {
		v, ok := value(w.panel, w.labels)
		if !ok || !w.check(v) {
			t.Errorf("panel %q%v = %v (found %v), want %s; it has %v", w.panel, w.labels, v, ok, w.want, results[w.panel])
		}
	}

	// --- the alerts ---
	type want struct {
		state  string
		labels map[string]string
	}
	wants := map[string][]want{
		"CRIMirrorPullsBlocked":                           {{"firing", map[string]string{"registry": blockedHost}}},
		"CRIMirrorSourceContactedUnderNeverContactSource": {{"firing", map[string]string{"registry": "registry.k8s.io", "instance": a.metricsAddr}}},
		"CRIMirrorConfigReloadFailed":                     {{"firing", map[string]string{"instance": a.metricsAddr}}},
		"CRIMirrorMirrorFailing":                          {{"pending", map[string]string{"mirror": deadA}}},
		"CRIMirrorMirrorDown":                             {{"pending", map[string]string{"mirror": deadB}}},
		"CRIMirrorFallbackRateHigh":                       {{"pending", map[string]string{"registry": sourceHost}}, {"pending", map[string]string{"registry": prefixB}}},
		"CRIMirrorServedBySource":                         {{"pending", map[string]string{"registry": prefixB}}},
		"CRIMirrorPullsFailing":                           {{"pending", map[string]string{"registry": sourceHost}}},
		"CRIMirrorRuntimeUnavailable":                     nil,
		"CRIMirrorProxyDown":                              nil,
		"CRIMirrorTagStale":                               nil, // no tag-check policy here: test/e2e/tagcheck_test.go
		"CRIMirrorTagChanged":                             nil,
	}
	var alerts []promAlert
	err = waitFor(30*time.Second, "the alerts to reach their states", func() error {
		if alerts, err = prom.alerts(); err != nil {
			return err
		}
		for name, ws := range wants {
			var got []promAlert
			for _, al := range alerts {
				if al.Labels["alertname"] == name {
					got = append(got, al)
				}
			}
			if len(got) != len(ws) {
				return fmt.Errorf("%s: %d alerts %v, want %d", name, len(got), got, len(ws))
			}
			for _, w := range ws {
				found := false
				for _, al := range got {
					found = found || (al.State == w.state && promtest.Matches(al.Labels, w.labels))
				}
				if !found {
					return fmt.Errorf("%s: no %s alert with %v among %v", name, w.state, w.labels, got)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("%v\nall alerts: %v", err, alerts)
	}
	rules, err := os.ReadFile(filepath.Join(env.root, "deploy", "prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*- alert: (\S+)`).FindAllStringSubmatch(string(rules), -1) {
		if _, ok := wants[m[1]]; !ok {
			t.Errorf("alert %s is not covered by this test", m[1])
		}
	}

	// A proxy that stops answering: the ProxyDown alert starts its wait, and the panel counts one.
	b.stop()
	prom.waitValue(t, `sum(up{job="cri-mirror-proxy"})`, 1)
	err = waitFor(30*time.Second, "CRIMirrorProxyDown pending for proxy B", func() error {
		alerts, err := prom.alerts()
		if err != nil {
			return err
		}
		for _, al := range alerts {
			if al.Labels["alertname"] == "CRIMirrorProxyDown" && al.State == "pending" && al.Labels["instance"] == b.metricsAddr {
				return nil
			}
		}
		return errors.New("not yet")
	})
	if err != nil {
		t.Error(err)
	}
}

// dashboardExpr is one query of a dashboard panel.
type dashboardExpr struct{ title, expr string }

func dashboardExprs(t *testing.T) []dashboardExpr {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(env.root, "deploy", "grafana", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var d struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	var out []dashboardExpr
	var walk func([]json.RawMessage)
	walk = func(raws []json.RawMessage) {
		for _, raw := range raws {
			var p panel
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatal(err)
			}
			for _, tg := range p.Targets {
				out = append(out, dashboardExpr{p.Title, tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// prometheus is a Prometheus server on loopback with its own config and data directory.
type prometheus struct {
	addr string
	proc *process
}

// startPrometheus runs Prometheus scraping the metrics addresses every second as
// job="cri-mirror-proxy" and evaluating the shipped alert rules every second.
func startPrometheus(t *testing.T, bin string, targets ...string) *prometheus {
	t.Helper()
	dir, err := os.MkdirTemp(env.dir, "prom")
	if err != nil {
		t.Fatal(err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	quoted := make([]string, len(targets))
	for i, tg := range targets {
		quoted[i] = fmt.Sprintf("%q", tg)
	}
	conf := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: cri-mirror-proxy
    static_configs:
      - targets: [%s]
`, filepath.Join(env.root, "deploy", "prometheus", "alerts.yaml"), strings.Join(quoted, ", "))
	confPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &prometheus{addr: fmt.Sprintf("127.0.0.1:%d", port)}
	p.proc, err = startProcess("prometheus", filepath.Join(dir, "prometheus.log"), bin,
		"--config.file="+confPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+p.addr,
		"--storage.tsdb.retention.time=1h")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("----- prometheus log -----\n%s", logTail(p.proc.logPath, 30))
		}
		if !p.proc.stop(10 * time.Second) {
			t.Errorf("prometheus did not stop within 10s")
		}
	})
	err = waitFor(60*time.Second, "prometheus to be ready", func() error {
		if !p.proc.running() {
			return fmt.Errorf("prometheus exited: %s", p.proc.exitState())
		}
		_, err := p.get("/-/ready", nil)
		return err
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, logTail(p.proc.logPath, 30))
	}
	return p
}

func (p *prometheus) get(path string, q url.Values) ([]byte, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	u := "http://" + p.addr + path
	if q != nil {
		u += "?" + q.Encode()
	}
	resp, err := c.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return body, nil
}

// promSample is one series of an instant query's result.
type promSample struct {
	labels map[string]string
	value  float64
}

func (s promSample) String() string {
	keys := make([]string, 0, len(s.labels))
	for k := range s.labels {
		keys = append(keys, k+"="+s.labels[k])
	}
	sort.Strings(keys)
	return fmt.Sprintf("{%s} %v", strings.Join(keys, ","), s.value)
}

// query runs an instant query; the result must be a vector (or a scalar, as one sample).
func (p *prometheus) query(q string) ([]promSample, error) {
	body, err := p.get("/api/v1/query", url.Values{"query": {q}})
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, errors.New(r.Error)
	}
	parse := func(v [2]any) (float64, error) {
		s, _ := v[1].(string)
		var f float64
		_, err := fmt.Sscan(s, &f)
		if s == "NaN" {
			return 0, fmt.Errorf("NaN")
		}
		return f, err
	}
	switch r.Data.ResultType {
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(r.Data.Result, &v); err != nil {
			return nil, err
		}
		f, err := parse(v)
		return []promSample{{labels: map[string]string{}, value: f}}, err
	case "vector":
		var vec []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(r.Data.Result, &vec); err != nil {
			return nil, err
		}
		var out []promSample
		for _, s := range vec {
			f, err := parse(s.Value)
			if err != nil {
				return nil, fmt.Errorf("series %v: %w", s.Metric, err)
			}
			out = append(out, promSample{labels: s.Metric, value: f})
		}
		return out, nil
	}
	return nil, fmt.Errorf("result type %s", r.Data.ResultType)
}

// waitValue waits until q returns exactly one sample equal to want.
func (p *prometheus) waitValue(t *testing.T, q string, want float64) {
	t.Helper()
	var last []promSample
	err := waitFor(60*time.Second, q, func() error {
		res, err := p.query(q)
		if err != nil {
			return err
		}
		last = res
		if len(res) != 1 || res[0].value != want {
			return fmt.Errorf("got %v, want %v", res, want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v (last %v)", err, last)
	}
}

// promAlert is one alert of /api/v1/alerts.
type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func (a promAlert) String() string {
	return fmt.Sprintf("%s %s%v", a.Labels["alertname"], a.State, a.Labels)
}

func (p *prometheus) alerts() ([]promAlert, error) {
	body, err := p.get("/api/v1/alerts", nil)
	if err != nil {
		return nil, err
	}
	var r struct {
		Data struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	return r.Data.Alerts, nil
}
