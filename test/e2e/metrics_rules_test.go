//go:build e2e

package e2e

import (
	"fmt"
	"testing"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/promtest"
)

// TestMetricsFollowRules: the per-rule and per-mirror series exist at 0 from the start, so the
// first event of each is an increase Prometheus sees, and a reload that removes a mirror takes
// its series away, its health included (a dead mirror's 0 would otherwise keep an alert firing).
func TestMetricsFollowRules(t *testing.T) {
	cleanImages(t)
	dead := fmt.Sprintf("127.0.0.1:%d/dead", env.closedPort) // refuses connections
	good := env.mirrorLoc("m1")
	p := startProxyWith(t, registriesConf(rule{prefix: sourceHost, mirrors: []mirror{{location: dead}, {location: good}}}),
		proxyOpts{args: []string{"--mirror-cooldown", "10m"}})

	// value returns the sample of name with exactly these labels, and whether there is one.
	value := func(m promtest.Set, name string, labels map[string]string) (float64, bool) {
		for _, s := range m {
			if s.Name == name && len(s.Labels) == len(labels) && promtest.Matches(s.Labels, labels) {
				return s.Value, true
			}
		}
		return 0, false
	}
	type want struct {
		name   string
		labels map[string]string
		value  float64
		absent bool
	}
	check := func(stage string, wants []want) {
		t.Helper()
		m := p.metrics()
		for _, w := range wants {
			v, ok := value(m, w.name, w.labels)
			switch {
			case w.absent && ok:
				t.Errorf("%s: %s%v = %v, want no such series", stage, w.name, w.labels, v)
			case !w.absent && !ok:
				t.Errorf("%s: %s%v is missing", stage, w.name, w.labels)
			case !w.absent && v != w.value:
				t.Errorf("%s: %s%v = %v, want %v", stage, w.name, w.labels, v, w.value)
			}
		}
		if t.Failed() {
			t.Logf("%s:\n%s", stage, m.Dump("cri_mirror_"))
		}
	}
	l := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	const (
		pulls    = "cri_mirror_pulls_total"
		attempts = "cri_mirror_pull_attempts_total"
		sources  = "cri_mirror_source_pulls_total"
		healthy  = "cri_mirror_mirror_healthy"
	)

	check("before any pull", []want{
		{name: pulls, labels: l("registry", sourceHost, "result", "blocked")},
		{name: pulls, labels: l("registry", sourceHost, "result", "success")},
		{name: pulls, labels: l("registry", "none", "result", "invalid")},
		{name: sources, labels: l("registry", sourceHost)},
		{name: attempts, labels: l("registry", sourceHost, "mirror", dead, "result", "unreachable")},
		{name: attempts, labels: l("registry", sourceHost, "mirror", good, "result", "success")},
		{name: attempts, labels: l("registry", sourceHost, "mirror", "source", "result", "error")},
		{name: healthy, labels: l("mirror", dead), value: 1},
		{name: healthy, labels: l("mirror", good), value: 1},
	})

	p.mustPull(sourceHost+"/e2e/metrics-rules:v1", mustPushRandom(t, env.mirror.host+"/m1/e2e/metrics-rules:v1"))
	check("after a pull past the dead mirror", []want{
		{name: pulls, labels: l("registry", sourceHost, "result", "success"), value: 1},
		{name: attempts, labels: l("registry", sourceHost, "mirror", good, "result", "success"), value: 1},
		{name: healthy, labels: l("mirror", dead), value: 0},
		{name: healthy, labels: l("mirror", good), value: 1},
	})

	p.reload(registriesConf(rule{prefix: sourceHost, mirrors: []mirror{{location: good}}}))
	check("after a reload without the dead mirror", []want{
		{name: healthy, labels: l("mirror", dead), absent: true},
		{name: attempts, labels: l("registry", sourceHost, "mirror", dead, "result", "unreachable"), absent: true},
		{name: healthy, labels: l("mirror", good), value: 1},
		{name: pulls, labels: l("registry", sourceHost, "result", "success"), value: 1},
		{name: attempts, labels: l("registry", sourceHost, "mirror", good, "result", "success"), value: 1},
	})

	p.reload(registriesConf(rule{prefix: "other.test", mirrors: []mirror{{location: good}}}))
	check("after a reload replacing the rule", []want{
		{name: pulls, labels: l("registry", sourceHost, "result", "success"), absent: true},
		{name: pulls, labels: l("registry", "other.test", "result", "blocked")},
		{name: attempts, labels: l("registry", "other.test", "mirror", good, "result", "success")},
		{name: attempts, labels: l("registry", "none", "mirror", "source", "result", "success")},
	})
}
