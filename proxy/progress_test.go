package proxy

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/metrics"
)

// scriptedMeter is an ingestMeter double: each call moves the counters by
// step, with inFlight downloads, or fails with err.
type scriptedMeter struct {
	mu       sync.Mutex
	moved    int64
	step     int64
	inFlight int
	err      error
	calls    int
}

func (m *scriptedMeter) ingested(context.Context) (int64, int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	m.moved += m.step
	return m.moved, m.inFlight, m.err
}

func TestStalledMirrorPullMovesOn(t *testing.T) {
	for _, tc := range []struct {
		name    string
		meter   *scriptedMeter
		stalled bool
	}{
		{"nothing ever downloaded", &scriptedMeter{}, true},
		{"a trickle", &scriptedMeter{step: 10, inFlight: 1}, true},
		{"downloading", &scriptedMeter{step: 1 << 20, inFlight: 2}, false},
		{"unpacking after a download", nil, false},
		{"runtime without progress reports", &scriptedMeter{err: status.Error(codes.Unimplemented, "unknown service")}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, WithStallTimeout(200*time.Millisecond))
			if tc.meter == nil {
				h.srv.progress = &unpacking{}
			} else {
				h.srv.progress = tc.meter
			}
			h.rt.Stall("mirror-a.test/hub/library/app:1")
			h.rt.Publish("mirror-b.test/library/app:1", "app")

			// A stalled pull returns when the watcher gives up on the mirror: its
			// deadline only bounds the test, and is long so that a loaded machine
			// (the race detector, parallel packages) cannot end it first. A pull
			// that is not stalled runs until its deadline, which must outlast
			// several stall windows.
			deadline := 1500 * time.Millisecond
			if tc.stalled {
				deadline = 30 * time.Second
			}
			timeouts, err := pullApp(h, deadline)
			if !tc.stalled {
				if err == nil || timeouts != 0 {
					t.Fatalf("pull = %v, timeouts = %v: a pull that is not stalled must be left to the caller's deadline", err, timeouts)
				}
				return
			}
			checkMovedOn(t, h, "stalled", timeouts, err)
		})
	}
}

// pullApp pulls app:1 (mirror-a.test, then mirror-b.test, then the source)
// under deadline, and returns the timed-out attempts on mirror-a.test.
func pullApp(h *harness, deadline time.Duration) (float64, error) {
	c, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	_, err := h.images.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "app:1"}})
	return testutil.ToFloat64(h.metrics.Attempts.WithLabelValues("docker.io", "mirror-a.test/hub", metrics.ResultTimeout)), err
}

// checkMovedOn checks that pullApp gave mirror-a.test up (a timeout, held
// back) and was served by mirror-b.test; what says why it was given up.
func checkMovedOn(t *testing.T, h *harness, what string, timeouts float64, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("pull: %v: the %s mirror should have been left for the next one", err, what)
	}
	if want := []string{"mirror-a.test/hub/library/app:1", "mirror-b.test/library/app:1"}; !slices.Equal(h.rt.PulledRefs(), want) {
		t.Errorf("runtime pulls = %q, want %q", h.rt.PulledRefs(), want)
	}
	if timeouts != 1 {
		t.Errorf("timeout attempts of the %s mirror = %v, want 1", what, timeouts)
	}
	if h.srv.gate.breaker.allow("mirror-a.test/hub") {
		t.Errorf("a %s mirror must be held back", what)
	}
}

// unpacking reports bytes moved before the watch began, then nothing and no
// downloads: the runtime is unpacking what it downloaded.
type unpacking struct{ calls int }

func (u *unpacking) ingested(context.Context) (int64, int, error) {
	u.calls++
	if u.calls == 1 {
		return 1 << 20, 1, nil
	}
	return 2 << 20, 0, nil
}

func TestStallIsNotWatchedOnTheLastCandidate(t *testing.T) {
	h := newHarness(t, WithStallTimeout(100*time.Millisecond))
	meter := &scriptedMeter{}
	h.srv.progress = meter
	h.rt.Stall("gcr.io/x/y:t")
	c, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel()
	// gcr.io/x/y: one mirror, then the source.
	h.rt.Fail("127.0.0.1:5000/mirror/gcr.io/x/y:t", status.Error(codes.NotFound, "not found"))
	_, err := h.images.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "gcr.io/x/y:t"}})
	if status.Code(err) != codes.DeadlineExceeded || strings.Contains(err.Error(), "stalled") {
		t.Errorf("pull = %v, want the caller's deadline: the last candidate gets all of it", err)
	}
}

// listStatuses is a containerd content service client that only lists ingests.
type listStatuses struct {
	contentapi.ContentClient
	answers [][]*contentapi.Status
}

func (l *listStatuses) ListStatuses(ctx context.Context, _ *contentapi.ListStatusesRequest, _ ...grpc.CallOption) (*contentapi.ListStatusesResponse, error) {
	if md, _ := metadata.FromOutgoingContext(ctx); len(md.Get("containerd-namespace")) != 1 || md.Get("containerd-namespace")[0] != "k8s.io" {
		return nil, status.Error(codes.FailedPrecondition, "namespace required")
	}
	a := l.answers[0]
	l.answers = l.answers[1:]
	return &contentapi.ListStatusesResponse{Statuses: a}, nil
}

func TestContainerdIngestsCountBytesMoved(t *testing.T) {
	st := func(ref string, off int64) *contentapi.Status { return &contentapi.Status{Ref: ref, Offset: off} }
	c := &containerdIngests{seen: map[string]int64{}, content: &listStatuses{answers: [][]*contentapi.Status{
		{st("a", 100)},
		{st("a", 300), st("b", 50)},
		{st("b", 60)}, // a completed: what it moved stays counted
		{st("a", 10)}, // a started again from the beginning
		{},
	}}}
	for i, want := range []struct {
		moved    int64
		inFlight int
	}{{100, 1}, {350, 2}, {360, 1}, {370, 1}, {370, 0}} {
		moved, inFlight, err := c.ingested(context.Background())
		if err != nil || moved != want.moved || inFlight != want.inFlight {
			t.Errorf("call %d = %d, %d, %v; want %d, %d", i+1, moved, inFlight, err, want.moved, want.inFlight)
		}
	}
}
