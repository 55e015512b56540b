package proxy

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/metrics"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
)

// fakeClock is a clock tests move by hand; safe for the server's goroutines.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Unix(1000, 0).UnixNano())
	return c
}

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// TestAlongsideProbeLeavesRecencyToThePull: a probe that runs alongside a
// pull and finds the manifest says nothing new; only the pull's own result
// may refresh the mirror's last hit. Here the pull is abandoned by its
// caller, so the hit of the pull before it is the last one, and once that is
// older than the overlap the probe goes first again.
func TestAlongsideProbeLeavesRecencyToThePull(t *testing.T) {
	var probes atomic.Int32
	h := newHarness(t, WithProbeOverlap(5*time.Minute), withProbeDelay(0),
		withProber(funcProber(func(context.Context, resolver.Candidate) (probeResult, error) {
			probes.Add(1)
			return probePresent, nil
		})))
	clock := newFakeClock()
	h.srv.gate.recent.now = clock.now
	h.rt.Publish("mirror-a.test/hub/library/one:1", "one")
	h.rt.Stall("mirror-a.test/hub/library/two:1")
	h.rt.Publish("mirror-a.test/hub/library/three:1", "three")

	h.mustPull("one:1") // probe before, then a hit at T
	clock.advance(4 * time.Minute)
	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := h.images.PullImage(short, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "two:1"}}); err == nil {
		t.Fatal("the stalled pull succeeded")
	}
	for deadline := time.Now().Add(5 * time.Second); h.waiters("docker.io/library/two:1") > 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if n := probes.Load(); n != 2 {
		t.Fatalf("probes = %d, want 2 (before one:1, alongside two:1)", n)
	}
	clock.advance(2 * time.Minute) // T+6m: the last hit (T) is older than the overlap
	h.mustPull("three:1")

	for mode, want := range map[string]float64{metrics.ProbeBefore: 2, metrics.ProbeAlongside: 1} {
		if got := testutil.ToFloat64(h.metrics.Probes.WithLabelValues("mirror-a.test/hub", mode, metrics.ProbePresent)); got != want {
			t.Errorf("probes %s = %v, want %v", mode, got, want)
		}
	}
}

// TestBadContentOpensTheBreaker: a mirror whose answers do not match their
// digests fails every pull; containerd reports some of these (a manifest
// HEAD with Content-Length 0) as InvalidArgument, which must not pass for
// the caller's fault. A refused request without such a reason still does.
func TestBadContentOpensTheBreaker(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		fault bool
	}{
		{"bad content", status.Error(codes.InvalidArgument, `failed to pull and unpack image "mirror-a.test/hub/library/app:1": failed to resolve reference: unexpected size 0 for manifest digest sha256:aa: invalid argument`), true},
		{"refused request", status.Error(codes.InvalidArgument, "image reference is not valid"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.rt.Fail("mirror-a.test/hub/library/app:1", tc.err)
			h.rt.Publish("mirror-b.test/library/app:1", "app")
			h.mustPull("app:1")
			if held := !h.srv.gate.breaker.allow("mirror-a.test/hub"); held != tc.fault {
				t.Errorf("mirror held back = %v, want %v", held, tc.fault)
			}
		})
	}
}

// TestProbesPerMirrorAreBounded: a burst of distinct pulls runs at most
// maxProbesPerMirror probes against one mirror at a time; the other pulls go
// to the runtime unprobed instead of waiting, and every pull succeeds.
func TestProbesPerMirrorAreBounded(t *testing.T) {
	const pulls = 3 * maxProbesPerMirror
	var running, most atomic.Int32
	release := make(chan struct{})
	h := newHarness(t, WithProbeOverlap(0), withProber(funcProber(func(ctx context.Context, c resolver.Candidate) (probeResult, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return probePresent, nil
	})))
	for i := range pulls {
		h.rt.Publish(fmt.Sprintf("mirror-a.test/hub/library/burst%d:1", i), fmt.Sprint(i))
	}
	errs := make(chan error, pulls)
	for i := range pulls {
		go func() {
			_, err := h.pull(fmt.Sprintf("burst%d:1", i), nil)
			errs <- err
		}()
	}
	// The pulls beyond the bound finish without a probe; then let the probes answer.
	for range pulls - maxProbesPerMirror {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	for range maxProbesPerMirror {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if m := most.Load(); m != maxProbesPerMirror {
		t.Errorf("most probes at once = %d, want %d", m, maxProbesPerMirror)
	}
}

// patientDouble is a prober double for mirror-a.test, which accepts
// connections: its probe is slow, and its longer wait (probeWithin) answers
// answer, or says slow once the wait is over. Other mirrors have the image.
type patientDouble struct {
	answer probeResult // probeSlow: never answers
	waits  atomic.Int32
}

func (p *patientDouble) Probe(_ context.Context, _ *resolver.Resolution, c resolver.Candidate) (probeResult, error) {
	if c.Location != "mirror-a.test/hub" {
		return probePresent, nil
	}
	return probeSlow, nil
}

func (p *patientDouble) probeWithin(ctx context.Context, _ *resolver.Resolution, c resolver.Candidate, timeout time.Duration) (probeResult, error) {
	if c.Location != "mirror-a.test/hub" {
		return probePresent, nil
	}
	p.waits.Add(1)
	if p.answer != probeSlow {
		return p.answer, nil
	}
	select {
	case <-time.After(timeout):
	case <-ctx.Done():
	}
	return probeSlow, nil
}

// TestSlowMirrorMustAnswerWithinTheStallWindow: in front of a runtime that
// reports no download progress (CRI-O), a mirror whose probe connected and
// got no answer is pulled from, and given up for the next candidate when it
// still answers no manifest request within the stall window, before the
// pull or alongside it; a slow mirror that does answer keeps its pull.
func TestSlowMirrorMustAnswerWithinTheStallWindow(t *testing.T) {
	for _, tc := range []struct {
		name    string
		overlap time.Duration // 0: probe before the pull; else the mirror was heard from and is probed alongside
		answer  probeResult
		stalled bool
	}{
		{"before the pull, never answers", 0, probeSlow, true},
		{"alongside the pull, never answers", time.Hour, probeSlow, true},
		{"before the pull, answers late", 0, probePresent, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prober := &patientDouble{answer: tc.answer}
			h := newHarness(t, WithStallTimeout(300*time.Millisecond), WithProbeOverlap(tc.overlap), withProbeDelay(0), withProber(prober))
			h.srv.progress = &scriptedMeter{err: status.Error(codes.Unimplemented, "unknown service")}
			if tc.overlap > 0 {
				h.srv.gate.recent.heard("mirror-a.test/hub")
			}
			h.rt.Stall("mirror-a.test/hub/library/app:1")
			h.rt.Publish("mirror-b.test/library/app:1", "app")

			// A stalled pull returns when the mirror is given up; a pull that is
			// not ends at this deadline, several stall windows away.
			deadline := 2 * time.Second
			if tc.stalled {
				deadline = 30 * time.Second
			}
			timeouts, err := pullApp(h, deadline)
			if prober.waits.Load() != 1 {
				t.Errorf("waits for an answer = %d, want 1", prober.waits.Load())
			}
			if !tc.stalled {
				if status.Code(err) != codes.DeadlineExceeded || timeouts != 0 {
					t.Fatalf("pull = %v, timeouts = %v: a slow mirror that answered keeps its pull until the caller's deadline", err, timeouts)
				}
				return
			}
			checkMovedOn(t, h, "silent", timeouts, err)
		})
	}
}
