package proxy

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.podman.io/image/v5/docker/reference"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/metrics"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
)

// mapProber is a prober double: results by candidate reference, present
// when unlisted.
type mapProber map[string]probeResult

func (m mapProber) Probe(_ context.Context, _ *resolver.Resolution, c resolver.Candidate) (probeResult, error) {
	if r, ok := m[c.Ref.String()]; ok {
		return r, nil
	}
	return probePresent, nil
}

func TestBreakerSkipsFailedMirror(t *testing.T) {
	h := newHarness(t)
	h.rt.Fail("mirror-a.test/hub/library/one:1", status.Error(codes.Unknown, "dial tcp 10.0.0.1:443: connect: connection refused"))
	h.rt.Publish("mirror-b.test/library/one:1", "one")
	h.rt.Publish("mirror-b.test/library/two:1", "two")
	h.mustPull("one:1")
	h.mustPull("two:1")
	want := []string{"mirror-a.test/hub/library/one:1", "mirror-b.test/library/one:1", "mirror-b.test/library/two:1"}
	if got := h.rt.PulledRefs(); !slices.Equal(got, want) {
		t.Errorf("runtime pulls = %q, want %q (the failed mirror held back)", got, want)
	}
	if got := testutil.ToFloat64(h.metrics.Attempts.WithLabelValues("docker.io", "mirror-a.test/hub", metrics.ResultSkipped)); got != 1 {
		t.Errorf("skipped attempts = %v, want 1", got)
	}
	if got := testutil.ToFloat64(h.metrics.MirrorHealthy.WithLabelValues("mirror-a.test/hub")); got != 0 {
		t.Errorf("mirror_healthy = %v, want 0", got)
	}
}

func TestCacheMissKeepsMirrorHealthy(t *testing.T) {
	h := newHarness(t)
	h.rt.Publish("mirror-b.test/library/one:1", "one")
	h.rt.Publish("mirror-a.test/hub/library/two:1", "two")
	h.mustPull("one:1") // mirror-a: not found, a miss
	h.mustPull("two:1")
	want := []string{"mirror-a.test/hub/library/one:1", "mirror-b.test/library/one:1", "mirror-a.test/hub/library/two:1"}
	if got := h.rt.PulledRefs(); !slices.Equal(got, want) {
		t.Errorf("runtime pulls = %q, want %q", got, want)
	}
}

func TestProbeSkipsMirrors(t *testing.T) {
	h := newHarness(t, withProber(mapProber{
		"mirror-a.test/hub/library/app:1": probeAbsent,
		"mirror-b.test/library/app:1":     probeUnreachable,
	}))
	h.rt.Publish("docker.io/library/app:1", "app")
	h.rt.Publish("mirror-b.test/library/other:1", "other")
	h.mustPull("app:1")
	if got := h.rt.PulledRefs(); !slices.Equal(got, []string{"docker.io/library/app:1"}) {
		t.Errorf("runtime pulls = %q: probed-out mirrors must not reach the runtime", got)
	}
	for result, want := range map[string]float64{metrics.ResultMissing: 1, metrics.ResultUnreachable: 0} {
		if got := testutil.ToFloat64(h.metrics.Attempts.WithLabelValues("docker.io", "mirror-a.test/hub", result)); got != want {
			t.Errorf("mirror-a %s = %v, want %v", result, got, want)
		}
	}
	if got := testutil.ToFloat64(h.metrics.Attempts.WithLabelValues("docker.io", "mirror-b.test", metrics.ResultUnreachable)); got != 1 {
		t.Errorf("mirror-b unreachable = %v, want 1", got)
	}
	// The unreachable mirror is now held back: a later pull skips it
	// without asking the runtime.
	if _, err := h.pull("other:1", nil); err == nil {
		t.Fatal("other:1 exists only on the held-back mirror; the pull should fail")
	}
	for _, ref := range h.rt.PulledRefs() {
		if strings.HasPrefix(ref, "mirror-b.test/") {
			t.Errorf("held-back mirror reached the runtime: %s", ref)
		}
	}
}

func TestManifestProbeAgainstARealRegistry(t *testing.T) {
	host := registryWith(t, "mirror/app:1")

	// A listener that accepts and never answers.
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hole.Close() })
	go func() {
		for i := 0; i < 100; i++ {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	// A port nothing listens on.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	p := newManifestProbe(300*time.Millisecond, "/nonexistent/auth.json", "cri-mirror-proxy/test")
	res := emptyRulesResolution(t, "example.test/app:1")
	for _, tc := range []struct {
		ref  string
		want probeResult
	}{
		{host + "/mirror/app:1", probePresent},
		{host + "/mirror/app:2", probeAbsent},
		{host + "/mirror/nothing:1", probeAbsent},
		{closedAddr + "/mirror/app:1", probeUnreachable},
		{hole.Addr().String() + "/mirror/app:1", probeSlow}, // connected: maybe a slow cache
	} {
		named, err := reference.ParseNormalizedNamed(tc.ref)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		got, err := p.Probe(context.Background(), res, resolver.Candidate{Ref: named, Insecure: true})
		if got != tc.want {
			t.Errorf("probe %s = %v (%v), want %v", tc.ref, got, err, tc.want)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("probe %s took %v: the timeout must bound it", tc.ref, d)
		}
	}
}

// funcProber is a prober double that runs a function.
type funcProber func(ctx context.Context, c resolver.Candidate) (probeResult, error)

func (f funcProber) Probe(ctx context.Context, _ *resolver.Resolution, c resolver.Candidate) (probeResult, error) {
	return f(ctx, c)
}

// withProbeDelay sets how long a pull runs before its alongside probe starts.
func withProbeDelay(d time.Duration) Option { return func(s *Server) { s.probeDelay = d } }

// waitForPull waits (bounded) until the runtime was asked to pull ref.
func (h *harness) waitForPull(ref string) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if slices.Contains(h.rt.PulledRefs(), ref) {
			return true
		}
	}
	return false
}

func TestProbeBeforeUntilTheMirrorAnswered(t *testing.T) {
	// Without the overlap every probe runs before the pull: a mirror that
	// served a pull a moment ago and lacks the next tag is still not asked.
	h := newHarness(t, WithProbeOverlap(0), withProber(mapProber{"mirror-a.test/hub/library/two:1": probeAbsent}))
	h.rt.Publish("mirror-a.test/hub/library/one:1", "one")
	h.rt.Publish("mirror-b.test/library/two:1", "two")
	h.mustPull("one:1")
	h.mustPull("two:1")
	want := []string{"mirror-a.test/hub/library/one:1", "mirror-b.test/library/two:1"}
	if got := h.rt.PulledRefs(); !slices.Equal(got, want) {
		t.Errorf("runtime pulls = %q, want %q", got, want)
	}
}

func TestProbeAlongsideStopsAPullToAMirrorThatStopsAnswering(t *testing.T) {
	var h *harness
	h = newHarness(t, withProber(funcProber(func(ctx context.Context, c resolver.Candidate) (probeResult, error) {
		if c.Ref.String() != "mirror-a.test/hub/library/two:1" {
			return probePresent, nil
		}
		// The mirror answered a moment ago, so the runtime is already
		// pulling while this probe runs: the probe finds it gone.
		if !h.waitForPull(c.Ref.String()) {
			t.Error("the runtime was not asked to pull while the probe ran")
		}
		return probeUnreachable, context.DeadlineExceeded
	})))
	h.rt.Publish("mirror-a.test/hub/library/one:1", "one")
	h.rt.Stall("mirror-a.test/hub/library/two:1")
	h.rt.Publish("mirror-b.test/library/two:1", "two")
	h.mustPull("one:1") // probe before: mirror-a had not answered yet
	h.mustPull("two:1") // probe alongside; the stalled pull is stopped

	want := []string{"mirror-a.test/hub/library/one:1", "mirror-a.test/hub/library/two:1", "mirror-b.test/library/two:1"}
	if got := h.rt.PulledRefs(); !slices.Equal(got, want) {
		t.Errorf("runtime pulls = %q, want %q", got, want)
	}
	for result, want := range map[string]float64{metrics.ResultSuccess: 1, metrics.ResultUnreachable: 1, metrics.ResultCanceled: 0, metrics.ResultError: 0} {
		if got := testutil.ToFloat64(h.metrics.Attempts.WithLabelValues("docker.io", "mirror-a.test/hub", result)); got != want {
			t.Errorf("mirror-a attempts %s = %v, want %v", result, got, want)
		}
	}
	if got := testutil.ToFloat64(h.metrics.MirrorHealthy.WithLabelValues("mirror-a.test/hub")); got != 0 {
		t.Errorf("mirror_healthy = %v, want 0: an unreachable mirror opens its breaker", got)
	}
	for _, p := range []struct {
		mode, result string
		want         float64
	}{{metrics.ProbeBefore, "present", 1}, {metrics.ProbeAlongside, "unreachable", 1}} {
		if got := testutil.ToFloat64(h.metrics.Probes.WithLabelValues("mirror-a.test/hub", p.mode, p.result)); got != p.want {
			t.Errorf("probes %s %s = %v, want %v", p.mode, p.result, got, p.want)
		}
	}
	// Once it failed, the mirror has to answer a probe again before the
	// runtime is sent there: after the cool-down its probe runs first.
	h.rt.Publish("mirror-b.test/library/three:1", "three")
	h.mustPull("three:1")
	if got := h.rt.PulledRefs(); slices.Contains(got, "mirror-a.test/hub/library/three:1") {
		t.Errorf("runtime pulls = %q: a held-back mirror reached the runtime", got)
	}
}

func TestProbeAlongsideDoesNotWaitForTheProbe(t *testing.T) {
	stopped := make(chan struct{}, 1)
	h := newHarness(t, withProbeDelay(0), withProber(funcProber(func(ctx context.Context, c resolver.Candidate) (probeResult, error) {
		if c.Ref.String() == "mirror-a.test/hub/library/one:1" {
			return probePresent, nil
		}
		<-ctx.Done() // a slow probe: only the pull's end stops it
		stopped <- struct{}{}
		return probeInconclusive, ctx.Err()
	})))
	h.rt.Publish("mirror-a.test/hub/library/one:1", "one")
	h.rt.Publish("mirror-a.test/hub/library/two:1", "two")
	h.mustPull("one:1")
	h.mustPull("two:1")
	select {
	case <-stopped:
	default:
		t.Fatal("the probe still ran after the pull it accompanied had ended")
	}
	if got := testutil.ToFloat64(h.metrics.Attempts.WithLabelValues("docker.io", "mirror-a.test/hub", metrics.ResultSuccess)); got != 2 {
		t.Errorf("mirror-a successes = %v, want 2", got)
	}
}

func TestProbeAlongsideOnlyForAPullThatTakesLong(t *testing.T) {
	var probes atomic.Int32
	h := newHarness(t, withProber(funcProber(func(context.Context, resolver.Candidate) (probeResult, error) {
		probes.Add(1)
		return probePresent, nil
	})))
	for _, name := range []string{"one", "two", "three"} {
		h.rt.Publish("mirror-a.test/hub/library/"+name+":1", name)
	}
	h.mustPull("one:1")
	if n := probes.Load(); n != 1 {
		t.Fatalf("probes = %d, want 1: a mirror not heard from is probed first", n)
	}
	// Pulls that end before the probe delay need no probe: they proved the mirror.
	h.mustPull("two:1")
	h.mustPull("three:1")
	if n := probes.Load(); n != 1 {
		t.Errorf("probes = %d, want still 1", n)
	}
	if got := testutil.ToFloat64(h.metrics.Probes.WithLabelValues("mirror-a.test/hub", metrics.ProbeBefore, "present")); got != 1 {
		t.Errorf("probes before, present = %v, want 1", got)
	}
}

func TestProbeFirstAgainAfterAMiss(t *testing.T) {
	h := newHarness(t, withProber(mapProber{"mirror-a.test/hub/library/three:1": probeAbsent}))
	h.rt.Publish("mirror-a.test/hub/library/one:1", "one")
	h.rt.Publish("mirror-b.test/library/two:1", "two")
	h.rt.Publish("mirror-b.test/library/three:1", "three")
	h.mustPull("one:1")   // probe first, a hit
	h.mustPull("two:1")   // pulled at once after the hit: the runtime finds no two:1 there
	h.mustPull("three:1") // after that miss, the probe runs first again and finds nothing
	want := []string{
		"mirror-a.test/hub/library/one:1",
		"mirror-a.test/hub/library/two:1", "mirror-b.test/library/two:1",
		"mirror-b.test/library/three:1",
	}
	if got := h.rt.PulledRefs(); !slices.Equal(got, want) {
		t.Errorf("runtime pulls = %q, want %q", got, want)
	}
}

// emptyRulesResolution resolves an image with an empty registries.conf of the
// test's own (never the host's).
func emptyRulesResolution(t testing.TB, image string) *resolver.Resolution {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "registries.conf")
	if err := os.WriteFile(conf, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := resolver.New(conf, filepath.Join(dir, "registries.conf.d"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Resolve(image)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestManifestProbeFollowsReload: the probe reads the registries
// configuration its resolution came from, so a reload reaches it. Here a
// reload takes `insecure` away from a plain-HTTP registry: containers/image
// then insists on TLS, and the probe, unable to tell, leaves the decision to
// the runtime.
func TestManifestProbeFollowsReload(t *testing.T) {
	host := registryWith(t, "mirror/app:1")

	dir := t.TempDir()
	conf := filepath.Join(dir, "registries.conf")
	write := func(content string) {
		if err := os.WriteFile(conf, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(fmt.Sprintf("[[registry]]\nlocation = %q\ninsecure = true\n", host))
	r, err := resolver.New(conf, filepath.Join(dir, "registries.conf.d"))
	if err != nil {
		t.Fatal(err)
	}
	p := newManifestProbe(2*time.Second, "/nonexistent/auth.json", "cri-mirror-proxy/test")
	probe := func() (probeResult, error) {
		res, err := r.Resolve(host + "/mirror/app:1")
		if err != nil {
			t.Fatal(err)
		}
		c := res.Candidates[0]
		c.Insecure = false // leave it to what containers/image reads itself
		return p.Probe(context.Background(), res, c)
	}

	if got, err := probe(); got != probePresent {
		t.Fatalf("probe = %v (%v), want present", got, err)
	}
	write("")
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, err := probe(); got != probeInconclusive || err == nil || !strings.Contains(err.Error(), "HTTP response to HTTPS client") {
		t.Errorf("after a reload dropping insecure: probe = %v (%v), want inconclusive, TLS refused", got, err)
	}
	write(fmt.Sprintf("[[registry]]\nlocation = %q\ninsecure = true\n", host))
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, err := probe(); got != probePresent {
		t.Errorf("after a reload restoring it: probe = %v (%v), want present", got, err)
	}
}

func mustTag(t testing.TB, ref string) name.Tag {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

// BenchmarkManifestProbe is the probe of a mirror that has the tag: the fixed
// cost it adds to a pull from a mirror it runs before (compare the bench's
// "proxy's own time per pull").
func BenchmarkManifestProbe(b *testing.B) {
	host := registryWith(b, "mirror/bench/probe:1")
	res := emptyRulesResolution(b, host+"/mirror/bench/probe:1")
	c := res.Candidates[0]
	c.Insecure = true
	p := newManifestProbe(2*time.Second, "", "bench")
	for b.Loop() {
		if got, err := p.Probe(context.Background(), res, c); got != probePresent {
			b.Fatal(got, err)
		}
	}
}

// registryWith serves an in-process registry holding a random image under
// each repository:tag given, for the test's lifetime; it returns its host.
func registryWith(t testing.TB, refs ...string) string {
	t.Helper()
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	for _, ref := range refs {
		img, err := random.Image(256, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(mustTag(t, host+"/"+ref), img); err != nil {
			t.Fatal(err)
		}
	}
	return host
}
