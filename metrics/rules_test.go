package metrics

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// series returns "name{label=value,...} value" for every series of the
// families named, sorted, from a fresh registry holding m.
func series(t *testing.T, m *Metrics, names ...string) []string {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if !slices.Contains(names, mf.GetName()) {
			continue
		}
		for _, metric := range mf.GetMetric() {
			var l []string
			for _, lp := range metric.GetLabel() {
				l = append(l, lp.GetName()+"="+lp.GetValue())
			}
			v := metric.GetCounter().GetValue() + metric.GetGauge().GetValue()
			out = append(out, mf.GetName()+"{"+strings.Join(l, ",")+"} "+formatValue(v))
		}
	}
	slices.Sort(out)
	return out
}

func formatValue(v float64) string {
	if v == 1 {
		return "1"
	}
	if v == 0 {
		return "0"
	}
	return "other"
}

func has(list []string, want string) bool { return slices.Contains(list, want) }

func TestSetRulesCreatesSeriesAtZero(t *testing.T) {
	m := New()
	m.SetRules([]Rule{
		{Registry: "docker.io", Mirrors: []string{"mirror.local/hub"}, Source: true},
		{Registry: "registry.k8s.io", Mirrors: []string{"mirror.local/k8s"}}, // NeverContactSource
		{Registry: "quay.io"}, // blocked, no mirrors
	})
	got := series(t, m, namePulls, namePullAttempts, nameAttemptFailures, namePullFallbacks, nameSourcePulls, nameProbes, nameMirrorHealthy)

	for _, reg := range []string{"docker.io", "registry.k8s.io", "quay.io", RegistryNone} {
		for _, res := range PullResults {
			if want := "cri_mirror_pulls_total{registry=" + reg + ",result=" + res + "} 0"; !has(got, want) {
				t.Errorf("missing %s", want)
			}
		}
		for _, name := range []string{nameSourcePulls, namePullFallbacks} {
			if want := name + "{registry=" + reg + "} 0"; !has(got, want) {
				t.Errorf("missing %s", want)
			}
		}
	}
	for _, pair := range [][2]string{{"docker.io", "mirror.local/hub"}, {"docker.io", MirrorSource}, {"registry.k8s.io", "mirror.local/k8s"}, {RegistryNone, MirrorSource}} {
		for _, res := range AttemptResults {
			if want := "cri_mirror_pull_attempts_total{mirror=" + pair[1] + ",registry=" + pair[0] + ",result=" + res + "} 0"; !has(got, want) {
				t.Errorf("missing %s", want)
			}
		}
		for _, reason := range FailureReasons {
			if want := "cri_mirror_pull_attempt_failures_total{mirror=" + pair[1] + ",reason=" + reason + ",registry=" + pair[0] + "} 0"; !has(got, want) {
				t.Errorf("missing %s", want)
			}
		}
	}
	// No attempt against a source that may not be contacted, and no mirror
	// under a rule that does not name it.
	for _, s := range got {
		for _, bad := range []string{"mirror=source,registry=registry.k8s.io", "mirror=source,registry=quay.io", "mirror=mirror.local/hub,registry=registry.k8s.io"} {
			if strings.Contains(s, bad) {
				t.Errorf("unexpected series %s", s)
			}
		}
	}
	for _, mirror := range []string{"mirror.local/hub", "mirror.local/k8s"} {
		if want := "cri_mirror_mirror_healthy{mirror=" + mirror + "} 1"; !has(got, want) {
			t.Errorf("missing %s", want)
		}
		for _, mode := range ProbeModes {
			for _, res := range ProbeResults {
				if want := "cri_mirror_probes_total{mirror=" + mirror + ",mode=" + mode + ",result=" + res + "} 0"; !has(got, want) {
					t.Errorf("missing %s", want)
				}
			}
		}
	}
	// Per registry: pulls by result, fallbacks, source pulls. Per (registry,
	// mirror): attempts by result, failures by reason. Per mirror: health,
	// probes by mode and result.
	want := 4*(len(PullResults)+2) + 4*(len(AttemptResults)+len(FailureReasons)) + 2*(1+len(ProbeModes)*len(ProbeResults))
	if n := len(got); n != want {
		t.Errorf("%d series, want %d:\n%s", n, want, strings.Join(got, "\n"))
	}
}

func TestSetRulesReload(t *testing.T) {
	m := New()
	m.SetRules([]Rule{
		{Registry: "docker.io", Mirrors: []string{"a.local/hub", "b.local/hub"}, Source: true},
		{Registry: "quay.io", Mirrors: []string{"a.local/quay"}, Source: true},
	})
	// Traffic before the reload.
	m.Pulls.WithLabelValues("docker.io", ResultSuccess).Add(3)
	m.ObserveAttempt("docker.io", "a.local/hub", ResultSuccess, 0)
	m.ObserveAttempt("docker.io", "b.local/hub", ResultError, 0)
	m.ObserveAttempt("quay.io", "a.local/quay", ResultError, 0)
	m.SetMirrorHealthy("a.local/hub", false)
	m.SetMirrorHealthy("b.local/hub", false)

	// b.local/hub is removed, quay.io is gone, a.local/quay moves under a
	// new rule, c.local is new.
	m.SetRules([]Rule{
		{Registry: "docker.io", Mirrors: []string{"a.local/hub"}, Source: true},
		{Registry: "ghcr.io", Mirrors: []string{"a.local/quay", "c.local/ghcr"}, Source: true},
	})
	got := series(t, m, namePulls, namePullAttempts, namePullAttemptDuration, nameAttemptFailures, nameSourcePulls, nameProbes, nameMirrorHealthy)
	for _, s := range got {
		for _, gone := range []string{"b.local/hub", "registry=quay.io"} {
			if strings.Contains(s, gone) {
				t.Errorf("series of a removed rule or mirror kept: %s", s)
			}
		}
	}
	for _, want := range []string{
		"cri_mirror_pulls_total{registry=docker.io,result=success} other", // counts survive a reload
		"cri_mirror_pull_attempts_total{mirror=a.local/hub,registry=docker.io,result=success} 1",
		"cri_mirror_mirror_healthy{mirror=a.local/hub} 0", // held back: a reload does not reset it
		"cri_mirror_mirror_healthy{mirror=a.local/quay} 1",
		"cri_mirror_mirror_healthy{mirror=c.local/ghcr} 1",
		"cri_mirror_pull_attempts_total{mirror=a.local/quay,registry=ghcr.io,result=error} 0",
		"cri_mirror_pulls_total{registry=ghcr.io,result=blocked} 0",
	} {
		if !has(got, want) {
			t.Errorf("missing %s in\n%s", want, strings.Join(got, "\n"))
		}
	}
	if v := testutil.ToFloat64(m.Pulls.WithLabelValues("docker.io", ResultSuccess)); v != 3 {
		t.Errorf("docker.io successes = %v after reload, want 3", v)
	}
	// The histogram keeps the series of the pairs still configured (the
	// loop above), and has the success series of a new pair at 0.
	if want := namePullAttemptDuration + "{mirror=a.local/quay,registry=ghcr.io,result=success} 0"; !has(got, want) {
		t.Errorf("missing %s", want)
	}
}

func TestSetRulesNoRules(t *testing.T) {
	m := New()
	m.SetMirrorHealthy("old.local", true)
	m.SetRules(nil)
	got := series(t, m, nameMirrorHealthy, namePulls, namePullAttempts)
	if has(got, "cri_mirror_mirror_healthy{mirror=old.local} 1") {
		t.Error("health of a mirror no rule names is kept")
	}
	if !has(got, "cri_mirror_pulls_total{registry=none,result=invalid} 0") ||
		!has(got, "cri_mirror_pull_attempts_total{mirror=source,registry=none,result=success} 0") {
		t.Errorf("the no-rule registry lacks its series:\n%s", strings.Join(got, "\n"))
	}
}

// TestSetRulesDigestSubstitutions: each rule has its substitution series at
// zero, "no_index" only with "none" and the other results only with a place
// the index came from; a removed rule's series go away.
func TestSetRulesDigestSubstitutions(t *testing.T) {
	m := New()
	m.SetRules([]Rule{{Registry: "docker.io", Mirrors: []string{"mirror.local/hub"}, Source: true}})
	got := series(t, m, nameDigestSubstitutions)
	for _, reg := range []string{"docker.io", RegistryNone} {
		if want := "cri_mirror_digest_substitutions_total{index_from=none,registry=" + reg + ",result=no_index} 0"; !has(got, want) {
			t.Errorf("missing %s", want)
		}
		for _, from := range []string{IndexFromMirror, IndexFromSource, IndexFromDir, IndexFromCompanion} {
			for _, res := range []string{SubstitutionSuccess, SubstitutionNotIndex, SubstitutionNoPlatform, SubstitutionFailed} {
				if want := "cri_mirror_digest_substitutions_total{index_from=" + from + ",registry=" + reg + ",result=" + res + "} 0"; !has(got, want) {
					t.Errorf("missing %s", want)
				}
			}
		}
	}
	if n := len(got); n != 2*17 {
		t.Errorf("%d series, want %d:\n%s", n, 2*17, strings.Join(got, "\n"))
	}
	m.SetRules(nil)
	for _, s := range series(t, m, nameDigestSubstitutions) {
		if strings.Contains(s, "registry=docker.io") {
			t.Errorf("series of a removed rule kept: %s", s)
		}
	}
}

// TestSetRulesTagChecks: the tag check series exist, at zero, for the rules
// with mirrors a tag-check policy covers, and go with the rule or its policy.
func TestSetRulesTagChecks(t *testing.T) {
	m := New()
	m.SetRules([]Rule{
		{Registry: "checked", Mirrors: []string{"m"}, Source: true, TagCheck: true},
		{Registry: "unchecked", Mirrors: []string{"m"}, Source: true},
		{Registry: "no-mirrors", Source: true, TagCheck: true},
	})
	want := []string{
		"cri_mirror_tag_changes_total{registry=checked} 0",
		"cri_mirror_tag_checks_total{registry=checked,result=match} 0",
		"cri_mirror_tag_checks_total{registry=checked,result=platform_match} 0",
		"cri_mirror_tag_checks_total{registry=checked,result=source_unreachable} 0",
		"cri_mirror_tag_checks_total{registry=checked,result=stale} 0",
	}
	if got := series(t, m, nameTagChecks, nameTagChanges); !slices.Equal(got, want) {
		t.Errorf("series =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := testutil.CollectAndCount(m.TagCheckDuration); n != 1 {
		t.Errorf("tag check duration histograms = %d, want 1 (the checked rule's, at zero)", n)
	}
	m.TagChecks.WithLabelValues("checked", TagCheckStale).Inc()
	m.SetRules([]Rule{{Registry: "checked", Mirrors: []string{"m"}, Source: true}})
	if got := series(t, m, nameTagChecks, nameTagChanges); len(got) != 0 {
		t.Errorf("after the policy stopped covering the rule: %q, want none", got)
	}
	if n := testutil.CollectAndCount(m.TagCheckDuration); n != 0 {
		t.Errorf("after the policy stopped covering the rule: %d tag check duration histograms, want none", n)
	}
}

// TestSetRulesAttemptLatencyAtZero: each (registry, mirror) pair has its
// successful-attempt latency series from the start, so a rate over it has a
// baseline before the first pull; a reload drops the pairs it removed.
func TestSetRulesAttemptLatencyAtZero(t *testing.T) {
	m := New()
	m.SetRules([]Rule{{Registry: "docker.io", Mirrors: []string{"mirror.local/hub"}, Source: true}})
	// docker.io: the mirror and the source; "none": the source.
	if n := testutil.CollectAndCount(m.AttemptDuration); n != 3 {
		t.Errorf("%d attempt latency series after load, want 3", n)
	}
	m.SetRules(nil)
	if n := testutil.CollectAndCount(m.AttemptDuration); n != 1 {
		t.Errorf("%d attempt latency series after a reload without rules, want 1 (none, source)", n)
	}
}
