//go:build e2e

package e2e

import (
	"fmt"
	"testing"
)

// TestMetrics: the counters after a known sequence of pulls through one mirror:
//  1. served by the mirror,
//  2. mirror lacks it, served by the source (one fallback, one source pull),
//  3. found nowhere (a failed pull).
//
// Failed attempts are counted over every result other than "success": the proxy may tell a
// missing image apart from a broken mirror (result "missing" vs "error").
func TestMetrics(t *testing.T) {
	cleanImages(t)
	p := startProxy(t, registriesConf(sourceRule("m1")))
	m1 := env.mirrorLoc("m1")
	reg := sourceHost

	p.mustPull(sourceHost+"/e2e/metrics-m:v1", env.image("M:m1/e2e/metrics-m:v1"))
	p.mustPull(sourceHost+"/e2e/metrics-s:v1", env.image("S:e2e/metrics-s:v1"))

	type want struct {
		name   string
		labels map[string]string
		value  float64
		failed bool // count the samples whose result is not "success"
	}
	check := func(stage string, wants []want) {
		t.Helper()
		m := p.metrics()
		bad := false
		for _, w := range wants {
			if !m.Has(w.name) {
				t.Errorf("%s: metric %s is missing", stage, w.name)
				bad = true
				continue
			}
			got, what := m.Sum(w.name, w.labels), fmt.Sprint(w.labels)
			if w.failed {
				got = m.Failed(w.name, w.labels)
				what += " (results other than success)"
			}
			if got != w.value {
				t.Errorf("%s: %s%s = %v, want %v", stage, w.name, what, got, w.value)
				bad = true
			}
		}
		if bad {
			t.Logf("cri_mirror_ metrics:\n%s", m.Dump("cri_mirror_"))
		}
	}
	l := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	attempts, fallbacks, sources, pulls := "cri_mirror_pull_attempts_total", "cri_mirror_pull_fallbacks_total", "cri_mirror_source_pulls_total", "cri_mirror_pulls_total"
	durations := "cri_mirror_pull_attempt_duration_seconds_count"

	check("after a mirror pull and a source pull", []want{
		{attempts, l("registry", reg, "mirror", m1, "result", "success"), 1, false},
		{attempts, l("registry", reg, "mirror", m1), 1, true},
		{attempts, l("registry", reg, "mirror", "source", "result", "success"), 1, false},
		{attempts, l("registry", reg, "mirror", "source"), 0, true},
		{durations, l("registry", reg, "mirror", m1, "result", "success"), 1, false},
		{durations, l("registry", reg, "mirror", m1), 1, true},
		{durations, l("registry", reg, "mirror", "source", "result", "success"), 1, false},
		{fallbacks, l("registry", reg), 1, false},
		{sources, l("registry", reg), 1, false},
		{pulls, l("registry", reg, "result", "success"), 2, false},
		{pulls, l("registry", reg), 0, true},
		{"cri_mirror_runtime_up", nil, 1, false},
	})
	if n := p.metrics().Sum("cri_mirror_aliases", nil); n < 1 {
		t.Errorf("cri_mirror_aliases = %v, want >= 1 after a mirror pull", n)
	}

	if _, err := p.pull(sourceHost + "/e2e/metrics-none:v1"); err == nil {
		t.Fatalf("pulling an image that exists nowhere succeeded")
	}
	check("after a failed pull", []want{
		{attempts, l("registry", reg, "mirror", m1, "result", "success"), 1, false},
		{attempts, l("registry", reg, "mirror", m1), 2, true},
		{attempts, l("registry", reg, "mirror", "source", "result", "success"), 1, false},
		{attempts, l("registry", reg, "mirror", "source"), 1, true},
		{fallbacks, l("registry", reg), 2, false},
		{sources, l("registry", reg), 1, false},
		{pulls, l("registry", reg, "result", "success"), 2, false},
		{pulls, l("registry", reg), 1, true},
	})
}
