package metrics

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
)

func TestRegisterFreshRegistry(t *testing.T) {
	m := New()
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatalf("Register: %v", err)
	}
	// A second registration of the same collectors fails with an error,
	// not a panic.
	if err := m.Register(reg); err == nil {
		t.Fatal("second Register on the same registry succeeded")
	}
	// The failed call must not have disturbed the first registration.
	m.Aliases.Set(3)
	if got := testutil.ToFloat64(m.Aliases); got != 3 {
		t.Errorf("aliases = %v", got)
	}
	if n, err := testutil.GatherAndCount(reg, nameAliases); err != nil || n != 1 {
		t.Errorf("GatherAndCount(%s) = %d, %v; want 1", nameAliases, n, err)
	}
}

func TestRegisterIsAllOrNothing(t *testing.T) {
	reg := prometheus.NewRegistry()
	// Occupy one name in the middle of the list with another instance of
	// the same gauge. (Same help and labels: a registry remembers a name's
	// shape even after Unregister.)
	squatter := New().Aliases
	reg.MustRegister(squatter)

	if err := New().Register(reg); err == nil {
		t.Fatal("Register over a conflicting collector succeeded")
	}
	// Nothing of ours may stay behind: after removing the squatter a fresh
	// Metrics registers cleanly.
	reg.Unregister(squatter)
	if err := New().Register(reg); err != nil {
		t.Fatalf("Register after a failed attempt: %v", err)
	}
}

func TestObserveAttempt(t *testing.T) {
	m := New()
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	m.ObserveAttempt("gcr.io", "127.0.0.1:5000/mirror", ResultSuccess, 1500*time.Millisecond)
	m.ObserveAttempt("gcr.io", "127.0.0.1:5000/mirror", ResultSuccess, 500*time.Millisecond)
	m.ObserveAttempt("gcr.io", MirrorSource, ResultError, time.Second)

	if got := testutil.ToFloat64(m.Attempts.WithLabelValues("gcr.io", "127.0.0.1:5000/mirror", ResultSuccess)); got != 2 {
		t.Errorf("attempts{success} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.Attempts.WithLabelValues("gcr.io", MirrorSource, ResultError)); got != 1 {
		t.Errorf("attempts{source,error} = %v, want 1", got)
	}

	const want = `
# HELP cri_mirror_pull_attempt_duration_seconds Duration of one pull attempt against one candidate (a mirror or the source), by result: success, error, canceled, timeout, missing or unreachable.
# TYPE cri_mirror_pull_attempt_duration_seconds histogram
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="127.0.0.1:5000/mirror",registry="gcr.io",result="success",le="0.05"} 0
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="127.0.0.1:5000/mirror",registry="gcr.io",result="success",le="0.1"} 0
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="127.0.0.1:5000/mirror",registry="gcr.io",result="success",le="0.25"} 0
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="127.0.0.1:5000/mirror",registry="gcr.io",result="success",le="0.5"} 1
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="127.0.0.1:5000/mirror",registry="gcr.io",result="success",le="1"} 1
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="127.0.0.1:5000/mirror",registry="gcr.io",result="success",le="2.5"} 2
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="127.0.0.1:5000/mirror",registry="gcr.io",result="success",le="5"} 2
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="127.0.0.1:5000/mirror",registry="gcr.io",result="success",le="10"} 2
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="127.0.0.1:5000/mirror",registry="gcr.io",result="success",le="20"} 2
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="127.0.0.1:5000/mirror",registry="gcr.io",result="success",le="30"} 2
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="127.0.0.1:5000/mirror",registry="gcr.io",result="success",le="60"} 2
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="127.0.0.1:5000/mirror",registry="gcr.io",result="success",le="120"} 2
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="127.0.0.1:5000/mirror",registry="gcr.io",result="success",le="180"} 2
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="127.0.0.1:5000/mirror",registry="gcr.io",result="success",le="300"} 2
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="127.0.0.1:5000/mirror",registry="gcr.io",result="success",le="+Inf"} 2
cri_mirror_pull_attempt_duration_seconds_sum{mirror="127.0.0.1:5000/mirror",registry="gcr.io",result="success"} 2
cri_mirror_pull_attempt_duration_seconds_count{mirror="127.0.0.1:5000/mirror",registry="gcr.io",result="success"} 2
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="source",registry="gcr.io",result="error",le="0.05"} 0
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="source",registry="gcr.io",result="error",le="0.1"} 0
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="source",registry="gcr.io",result="error",le="0.25"} 0
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="source",registry="gcr.io",result="error",le="0.5"} 0
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="source",registry="gcr.io",result="error",le="1"} 1
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="source",registry="gcr.io",result="error",le="2.5"} 1
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="source",registry="gcr.io",result="error",le="5"} 1
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="source",registry="gcr.io",result="error",le="10"} 1
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="source",registry="gcr.io",result="error",le="20"} 1
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="source",registry="gcr.io",result="error",le="30"} 1
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="source",registry="gcr.io",result="error",le="60"} 1
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="source",registry="gcr.io",result="error",le="120"} 1
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="source",registry="gcr.io",result="error",le="180"} 1
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="source",registry="gcr.io",result="error",le="300"} 1
cri_mirror_pull_attempt_duration_seconds_bucket{mirror="source",registry="gcr.io",result="error",le="+Inf"} 1
cri_mirror_pull_attempt_duration_seconds_sum{mirror="source",registry="gcr.io",result="error"} 1
cri_mirror_pull_attempt_duration_seconds_count{mirror="source",registry="gcr.io",result="error"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), namePullAttemptDuration); err != nil {
		t.Error(err)
	}
	// Nothing else moved.
	if n := testutil.CollectAndCount(m.Fallbacks); n != 0 {
		t.Errorf("fallbacks has %d series, want 0", n)
	}
}

func TestConfigReloadsStartAtZero(t *testing.T) {
	m := New()
	for _, r := range []string{ReloadSuccess, ReloadFailure} {
		if got := testutil.ToFloat64(m.ConfigReloads.WithLabelValues(r)); got != 0 {
			t.Errorf("reloads{%s} = %v, want 0", r, got)
		}
	}
	if n := testutil.CollectAndCount(m.ConfigReloads); n != 2 {
		t.Errorf("reloads has %d series before any reload, want 2", n)
	}
}

// fakeServices stands in for a *grpc.Server so InitializeMetrics creates
// every grpc_server_* series.
type fakeServices map[string]grpc.ServiceInfo

func (f fakeServices) GetServiceInfo() map[string]grpc.ServiceInfo { return f }

// TestNamesMatchGather touches every collector and checks that Names lists
// exactly what a scrape returns, so the list cannot drift from the code.
func TestNamesMatchGather(t *testing.T) {
	m := New()
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	m.ObserveAttempt("r", "m", ResultSuccess, time.Second)
	m.Fallbacks.WithLabelValues("r").Inc()
	m.AttemptFailures.WithLabelValues("r", "m", ReasonConnection).Inc()
	m.SourcePulls.WithLabelValues("r").Inc()
	m.Pulls.WithLabelValues("r", ResultSuccess).Inc()
	m.MirrorHealthy.WithLabelValues("m").Set(1)
	m.Probes.WithLabelValues("m", "before", "present").Inc()
	m.DigestSubstitutions.WithLabelValues("r", IndexFromMirror, SubstitutionSuccess).Inc()
	m.TagChecks.WithLabelValues("r", TagCheckMatch).Inc()
	m.TagChanges.WithLabelValues("r").Inc()
	m.TagCheckDuration.WithLabelValues("r").Observe(0.002)
	m.Aliases.Set(1)
	m.ConfigReloads.WithLabelValues(ReloadSuccess).Inc()
	m.RuntimeUp.Set(1)
	m.GRPC.InitializeMetrics(fakeServices{
		"runtime.v1.ImageService": {Methods: []grpc.MethodInfo{
			{Name: "PullImage"},
			{Name: "StreamImages", IsServerStream: true},
		}},
	})

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var gathered []string
	for _, mf := range mfs {
		gathered = append(gathered, mf.GetName())
	}
	slices.Sort(gathered)
	if names := Names(); !slices.Equal(names, gathered) {
		t.Errorf("Names() =\n%q\ngathered =\n%q", names, gathered)
	}
	for _, n := range Names() {
		if !strings.HasPrefix(n, "cri_mirror_") && !strings.HasPrefix(n, "grpc_server_") {
			t.Errorf("metric %s has neither the cri_mirror_ nor the grpc_server_ prefix", n)
		}
	}
}

func TestNamesIsACopy(t *testing.T) {
	Names()[0] = "changed"
	if Names()[0] == "changed" {
		t.Error("Names returns shared state")
	}
}

func TestMetricsLint(t *testing.T) {
	m := New()
	m.ObserveAttempt("r", "m", ResultSuccess, time.Second)
	for _, c := range m.collectors() {
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			if strings.HasPrefix(p.Metric, "grpc_") {
				continue // not ours to rename
			}
			t.Errorf("lint %s: %s", p.Metric, p.Text)
		}
	}
}

func TestNewRegistry(t *testing.T) {
	reg := NewRegistry()
	if err := New().Register(reg); err != nil {
		t.Fatalf("Register on NewRegistry: %v", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		seen[mf.GetName()] = true
	}
	for _, want := range []string{"go_goroutines", "go_build_info", nameAliases, nameRuntimeUp} {
		if !seen[want] {
			t.Errorf("NewRegistry gather lacks %s", want)
		}
	}
}
