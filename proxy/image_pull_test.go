package proxy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	crierrors "k8s.io/cri-api/pkg/errors"
)

func TestPullOrderAndFallback(t *testing.T) {
	tests := []struct {
		name      string
		image     string
		publish   map[string]string // pullable refs
		fail      map[string]codes.Code
		wantPulls []string
		wantAlias string // mirror ref the alias points at; "" = no alias
		wantCode  codes.Code
	}{
		{
			name:      "first mirror serves the tag",
			image:     "nginx:1.27",
			publish:   map[string]string{"mirror-a.test/hub/library/nginx:1.27": "nginx"},
			wantPulls: []string{"mirror-a.test/hub/library/nginx:1.27"},
			wantAlias: "mirror-a.test/hub/library/nginx:1.27",
		},
		{
			name:      "first mirror misses, second serves",
			image:     "docker.io/library/nginx:1.27",
			publish:   map[string]string{"mirror-b.test/library/nginx:1.27": "nginx"},
			wantPulls: []string{"mirror-a.test/hub/library/nginx:1.27", "mirror-b.test/library/nginx:1.27"},
			wantAlias: "mirror-b.test/library/nginx:1.27",
		},
		{
			name:    "both mirrors fail, source serves",
			image:   "nginx",
			publish: map[string]string{"docker.io/library/nginx:latest": "nginx"},
			fail:    map[string]codes.Code{"mirror-b.test/library/nginx:latest": codes.Unavailable},
			wantPulls: []string{
				"mirror-a.test/hub/library/nginx:latest", "mirror-b.test/library/nginx:latest", "docker.io/library/nginx:latest",
			},
		},
		{
			name:      "digest skips the tag-only mirror",
			image:     "nginx@sha256:" + strings.Repeat("a", 64),
			publish:   map[string]string{"mirror-b.test/library/nginx@sha256:" + strings.Repeat("a", 64): "nginx"},
			wantPulls: []string{"mirror-b.test/library/nginx@sha256:" + strings.Repeat("a", 64)},
			wantAlias: "mirror-b.test/library/nginx@sha256:" + strings.Repeat("a", 64),
		},
		{
			name:      "no rule: pulled as is",
			image:     "registry.example.com/app:v1",
			publish:   map[string]string{"registry.example.com/app:v1": "app"},
			wantPulls: []string{"registry.example.com/app:v1"},
		},
		{
			name:      "never contact source: mirrors only",
			image:     "quay.io/org/app:v1",
			wantPulls: []string{"mirror-a.test/quay/org/app:v1"},
			wantCode:  codes.NotFound,
		},
		{
			name:      "every candidate fails: last error's code",
			image:     "gcr.io/x/y:t",
			fail:      map[string]codes.Code{"gcr.io/x/y:t": codes.Unavailable},
			wantPulls: []string{"127.0.0.1:5000/mirror/gcr.io/x/y:t", "gcr.io/x/y:t"},
			wantCode:  codes.Unavailable,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			for ref, content := range tc.publish {
				h.rt.Publish(ref, content)
			}
			for ref, code := range tc.fail {
				h.rt.Fail(ref, status.Error(code, "injected"))
			}
			resp, err := h.pull(tc.image, nil)
			if got := status.Code(err); got != tc.wantCode {
				t.Fatalf("code = %v, want %v (err %v)", got, tc.wantCode, err)
			}
			if got := h.rt.PulledRefs(); !slices.Equal(got, tc.wantPulls) {
				t.Errorf("runtime pulls = %q, want %q", got, tc.wantPulls)
			}
			if err != nil {
				for _, ref := range tc.wantPulls {
					if !strings.Contains(err.Error(), ref) {
						t.Errorf("error does not name attempt %s: %v", ref, err)
					}
				}
				return
			}
			if !strings.HasPrefix(resp.GetImageRef(), "sha256:") {
				t.Errorf("image ref = %q", resp.GetImageRef())
			}
			named, _ := normalize(tc.image)
			a, ok := h.store.Get(named.String())
			switch {
			case tc.wantAlias == "" && ok:
				t.Errorf("unexpected alias %+v", a)
			case tc.wantAlias != "" && (!ok || a.Mirror != tc.wantAlias || a.ImageID != resp.GetImageRef()):
				t.Errorf("alias = %+v (found %v), want mirror %s id %s", a, ok, tc.wantAlias, resp.GetImageRef())
			}
		})
	}
}

// TestPullShortNameAlias: a short name resolved through [aliases] is pulled
// (through the rules) and recorded under the name it resolved to, as CRI-O
// stores it, not under the docker.io name the runtime would give it.
func TestPullShortNameAlias(t *testing.T) {
	h := newHarness(t)
	h.rt.Publish("127.0.0.1:5000/mirror/gcr.io/x/tools:1", "tools")
	resp, err := h.pull("ops/tools:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := h.rt.PulledRefs(), []string{"127.0.0.1:5000/mirror/gcr.io/x/tools:1"}; !slices.Equal(got, want) {
		t.Errorf("runtime pulls = %q, want %q", got, want)
	}
	if a, ok := h.store.Get("gcr.io/x/tools:1"); !ok || a.ImageID != resp.GetImageRef() || a.Mirror != "127.0.0.1:5000/mirror/gcr.io/x/tools:1" {
		t.Errorf("alias for gcr.io/x/tools:1 = %+v (found %v), want the mirror pull", a, ok)
	}
	if a, ok := h.store.Get("docker.io/ops/tools:1"); ok {
		t.Errorf("alias recorded under the docker.io name: %+v", a)
	}
}

func TestPullMetrics(t *testing.T) {
	h := newHarness(t)
	h.rt.Publish("docker.io/library/busybox:1", "busybox")
	h.rt.Publish("mirror-a.test/hub/library/nginx:1", "nginx")
	h.mustPull("busybox:1") // a: miss, b: miss, source: hit
	h.mustPull("nginx:1")   // a: hit

	m := h.metrics
	checks := []struct {
		name string
		got  float64
		want float64
	}{
		{"attempts mirror-a missing", testutil.ToFloat64(m.Attempts.WithLabelValues("docker.io", "mirror-a.test/hub", "missing")), 1},
		{"attempts mirror-a error", testutil.ToFloat64(m.Attempts.WithLabelValues("docker.io", "mirror-a.test/hub", "error")), 0},
		{"attempts mirror-a success", testutil.ToFloat64(m.Attempts.WithLabelValues("docker.io", "mirror-a.test/hub", "success")), 1},
		{"attempts mirror-b missing", testutil.ToFloat64(m.Attempts.WithLabelValues("docker.io", "mirror-b.test", "missing")), 1},
		{"misses are not failures", testutil.ToFloat64(m.AttemptFailures.WithLabelValues("docker.io", "mirror-b.test", "other")), 0},
		{"attempts source success", testutil.ToFloat64(m.Attempts.WithLabelValues("docker.io", "source", "success")), 1},
		{"fallbacks", testutil.ToFloat64(m.Fallbacks.WithLabelValues("docker.io")), 2},
		{"source pulls", testutil.ToFloat64(m.SourcePulls.WithLabelValues("docker.io")), 1},
		{"pulls success", testutil.ToFloat64(m.Pulls.WithLabelValues("docker.io", "success")), 2},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.AttemptDuration); n != 4 {
		t.Errorf("attempt duration series = %d, want 4", n)
	}
}

func TestPullCredentialsStayOnTheirHost(t *testing.T) {
	podSecret := &runtimeapi.AuthConfig{Username: "pod", Password: "pod-secret", ServerAddress: "docker.io"}
	mirrorCreds := &runtimeapi.AuthConfig{Username: "mirror", Password: "mirror-secret", ServerAddress: "mirror-b.test"}
	h := newHarness(t, WithCredentials(mapCredentials{"mirror-b.test": mirrorCreds}))
	h.rt.Publish("docker.io/library/app:1", "app")
	if _, err := h.pull("app:1", podSecret); err != nil {
		t.Fatal(err)
	}
	want := map[string]*runtimeapi.AuthConfig{
		"mirror-a.test/hub/library/app:1": nil, // no credentials configured for this host
		"mirror-b.test/library/app:1":     mirrorCreds,
		"docker.io/library/app:1":         podSecret,
	}
	calls := h.rt.Pulls()
	if len(calls) != len(want) {
		t.Fatalf("pulls = %v", calls)
	}
	for _, c := range calls {
		w := want[c.Image]
		if c.Auth.GetUsername() != w.GetUsername() || c.Auth.GetPassword() != w.GetPassword() {
			t.Errorf("%s got auth user %q, want %q", c.Image, c.Auth.GetUsername(), w.GetUsername())
		}
		if c.Image != "docker.io/library/app:1" && c.Auth.GetPassword() == podSecret.Password {
			t.Errorf("pod secret sent to mirror %s", c.Image)
		}
	}
}

func TestPullRefused(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		image   string
		code    codes.Code
		message string
	}{
		{"", codes.InvalidArgument, "image"},
		{"Upper/Case:1", codes.InvalidArgument, "invalid image reference"},
		{"nginx:bad tag", codes.InvalidArgument, "invalid image reference"},
		{strings.Repeat("a", 5000), codes.InvalidArgument, "invalid image reference"},
		{"blocked.test/app:1", codes.PermissionDenied, "blocked.test"},
		// A digest cannot use quay.io's tag-only mirror and the source is never contacted.
		{"quay.io/org/app@sha256:" + strings.Repeat("b", 64), codes.PermissionDenied, "quay.io"},
	}
	for _, tc := range tests {
		_, err := h.pull(tc.image, nil)
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.message) {
			t.Errorf("pull %.40q: err = %v, want code %v mentioning %q", tc.image, err, tc.code, tc.message)
		}
	}
	if got := h.rt.Pulls(); len(got) != 0 {
		t.Errorf("refused pulls reached the runtime: %v", got)
	}
}

func TestPullHonoursCallerDeadline(t *testing.T) {
	h := newHarness(t)
	h.rt.Block = make(chan struct{}) // never released: every runtime pull hangs
	h.rt.Publish("mirror-a.test/hub/library/slow:1", "slow")
	c, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := h.images.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "slow:1"}})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if got := h.rt.PulledRefs(); len(got) != 1 {
		t.Errorf("after the deadline no further candidate may be tried; pulls = %v", got)
	}
}

func TestPullAttemptTimeoutMovesOn(t *testing.T) {
	h := newHarness(t, WithAttemptTimeout(100*time.Millisecond))
	h.rt.Started = make(chan string, 10)
	h.rt.Block = make(chan struct{})
	h.rt.Publish("mirror-b.test/library/app:1", "app")
	go func() {
		// mirror-a stalls; release the runtime once mirror-b is asked.
		for ref := range h.rt.Started {
			if strings.HasPrefix(ref, "mirror-b.test") {
				close(h.rt.Block)
				return
			}
		}
	}()
	if _, err := h.pull("app:1", nil); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(h.metrics.Attempts.WithLabelValues("docker.io", "mirror-a.test/hub", "timeout")); got != 1 {
		t.Errorf("timeout attempts = %v, want 1", got)
	}
}

func TestPullDeduplicates(t *testing.T) {
	h := newHarness(t)
	h.rt.Started = make(chan string, 100)
	h.rt.Block = make(chan struct{})
	h.rt.Publish("mirror-a.test/hub/library/app:1", "app")

	const callers = 20
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	ids := make(chan string, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := h.pull("docker.io/library/app:1", nil)
			errs <- err
			ids <- resp.GetImageRef()
		}()
	}
	select {
	case <-h.rt.Started: // the one shared pull reached the runtime
	case <-time.After(5 * time.Second):
		t.Fatal("no pull reached the runtime")
	}
	// Let every caller join the flight before the pull finishes.
	deadline := time.Now().Add(5 * time.Second)
	for h.waiters("docker.io/library/app:1") < callers && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(h.rt.Block)
	wg.Wait()
	close(errs)
	close(ids)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	first := ""
	for id := range ids {
		if first == "" {
			first = id
		}
		if id != first || id == "" {
			t.Fatalf("callers got different ids: %q vs %q", id, first)
		}
	}
	if got := h.rt.PulledRefs(); len(got) != 1 {
		t.Fatalf("runtime pulls = %d (%v), want 1", len(got), got)
	}
}

func TestPullCallerLeavingDoesNotFailOthers(t *testing.T) {
	h := newHarness(t)
	h.rt.Started = make(chan string, 10)
	h.rt.Block = make(chan struct{})
	h.rt.Publish("mirror-a.test/hub/library/app:1", "app")

	impatient, cancel := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() {
		_, err := h.images.PullImage(impatient, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "app:1"}})
		firstErr <- err
	}()
	<-h.rt.Started
	second := make(chan error, 1)
	go func() { _, err := h.pull("app:1", nil); second <- err }()
	deadline := time.Now().Add(5 * time.Second)
	for h.waiters("docker.io/library/app:1") < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-firstErr; status.Code(err) != codes.Canceled {
		t.Errorf("cancelled caller: %v", err)
	}
	close(h.rt.Block)
	if err := <-second; err != nil {
		t.Errorf("remaining caller failed: %v", err)
	}
}

// waiters reports how many callers wait on the flight of an image.
func (h *harness) waiters(image string) int {
	h.srv.flights.mu.Lock()
	defer h.srv.flights.mu.Unlock()
	n := 0
	for key, fl := range h.srv.flights.m {
		if strings.HasPrefix(key, image+"\x00") {
			n += fl.waiters
		}
	}
	return n
}

func TestPullRuntimeDownDoesNotBlameMirrors(t *testing.T) {
	h := newHarness(t)
	h.rt.Stop()
	_, err := h.pull("app:1", nil)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "runtime unavailable") {
		t.Fatalf("pull with the runtime gone: %v, want Unavailable naming the runtime", err)
	}
	if got := testutil.ToFloat64(h.metrics.Fallbacks.WithLabelValues("docker.io")); got != 0 {
		t.Errorf("fallbacks = %v: with the runtime gone no other candidate can help", got)
	}
	if !h.srv.gate.breaker.allow("mirror-a.test/hub") {
		t.Error("the mirror was held back for the runtime's outage")
	}
}

func TestPullNeverContactSourceSaysWhy(t *testing.T) {
	h := newHarness(t)
	_, err := h.pull("quay.io/org/app:v1", nil) // the only mirror lacks it
	if err == nil || !strings.Contains(err.Error(), `rule prefix "quay.io"`) || !strings.Contains(err.Error(), "never contact the source") {
		t.Errorf("err = %v, want it to say the source is never contacted under rule quay.io", err)
	}
}

func TestFailureReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{status.Error(codes.Unknown, `failed to resolve reference "m/x:1": pulling from host m failed with status code [manifests 1]: 401 Unauthorized`), "unauthorized"},
		{status.Error(codes.Unknown, `failed to resolve reference "m/x:1": unexpected status from HEAD request to http://m/v2/x/manifests/1: 500 Internal Server Error`), "server_error"},
		{status.Error(codes.Unknown, `failed to copy: httpReadSeeker: failed open: failed to do request: Get "http://m/v2/x/blobs/sha256:aa": dial tcp 127.0.0.1:1: connect: connection refused`), "connection"},
		{status.Error(codes.Unknown, `failed to copy: unexpected EOF`), "connection"},
		{status.Error(codes.Unknown, `failed commit on ref "layer-sha256:aa": unexpected commit digest sha256:bb, expected sha256:aa: failed precondition`), "bad_content"},
		{status.Error(codes.DeadlineExceeded, "attempt timed out"), "timeout"},
		{status.Error(codes.Unknown, "dial tcp: i/o timeout"), "timeout"},
		{status.Error(codes.Unknown, "something else"), "other"},
	} {
		if got := failureReason(tc.err); got != tc.want {
			t.Errorf("failureReason(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

func TestIsMiss(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{status.Error(codes.NotFound, "x"), true},
		{status.Error(codes.Unknown, `failed to pull and unpack image "m/x:1": failed to resolve reference "m/x:1": m/x:1: not found`), true},
		{status.Error(codes.Unknown, `reading manifest 1 in m/x: manifest unknown: manifest unknown`), true},
		{status.Error(codes.Unknown, `failed to resolve reference "m/x:1": unexpected status from HEAD request to http://m/v2/x/manifests/1: 500 Internal Server Error`), false},
		{status.Error(codes.Unauthenticated, "x"), false},
	} {
		if got := isMiss(tc.err); got != tc.want {
			t.Errorf("isMiss(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestIsImageID(t *testing.T) {
	hex := strings.Repeat("0a", 32)
	for s, want := range map[string]bool{
		"sha256:" + hex:                       true, // containerd
		hex:                                   true, // CRI-O
		"docker.io/library/app@sha256:" + hex: false,
		"sha256:" + hex[:63]:                  false,
		strings.ToUpper(hex):                  false,
		"app:latest":                          false,
		"":                                    false,
	} {
		if got := isImageID(s); got != want {
			t.Errorf("isImageID(%q) = %v, want %v", s, got, want)
		}
	}
}

// CRI-O answers every failed pull with Unknown. When its last answer says
// the image is not there, the pull fails with NotFound, as in front of
// containerd; any other Unknown stays Unknown.
func TestPullCodeInFrontOfCRIO(t *testing.T) {
	const (
		mirrorRef   = "127.0.0.1:5000/mirror/gcr.io/x/y:t"
		sourceRef   = "gcr.io/x/y:t"
		miss        = "unable to try pulling possible OCI artifact: build image source: reading manifest t in %s: manifest unknown"
		unreachable = "RegistryUnavailable: unable to try pulling possible OCI artifact: build image source: pinging container registry %s: Get \"https://%[1]s/v2/\": dial tcp 127.0.0.1:1: connect: connection refused"
	)
	for _, tc := range []struct {
		name       string
		mirrorErr  error
		sourceText string
		want       codes.Code
		wantPrefix error // kubelet's reason, from the message's start (k8s.io/cri-api/pkg/errors)
	}{
		{"every candidate misses", nil, fmt.Sprintf(miss, "gcr.io/x/y"), codes.NotFound, nil},
		{"the last candidate fails otherwise", nil, "unable to try pulling possible OCI artifact: build image source: pinging container registry gcr.io: received unexpected HTTP status: 500 Internal Server Error", codes.Unknown, nil},
		{"the source is unreachable", nil, fmt.Sprintf(unreachable, "gcr.io"), codes.Unknown, crierrors.ErrRegistryUnavailable},
		{"the source refuses the signature", nil, "SignatureValidationFailed: Source image rejected: A signature was required, but no signature exists", codes.Unknown, crierrors.ErrSignatureValidationFailed},
		{"the mirror is unreachable, the source misses", status.Errorf(codes.Unknown, unreachable, "127.0.0.1:5000"), fmt.Sprintf(miss, "gcr.io/x/y"), codes.NotFound, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			mirrorErr := tc.mirrorErr
			if mirrorErr == nil {
				mirrorErr = status.Errorf(codes.Unknown, miss, "127.0.0.1:5000/mirror/gcr.io/x/y")
			}
			h.rt.Fail(mirrorRef, mirrorErr)
			h.rt.Fail(sourceRef, status.Error(codes.Unknown, tc.sourceText))
			_, err := h.pull(sourceRef, nil)
			if got := status.Code(err); got != tc.want {
				t.Errorf("code = %v, want %v (err %v)", got, tc.want, err)
			}
			msg := status.Convert(err).Message()
			for _, reason := range []error{crierrors.ErrRegistryUnavailable, crierrors.ErrSignatureValidationFailed} {
				if has := strings.HasPrefix(msg, reason.Error()); has != (reason == tc.wantPrefix) {
					t.Errorf("message starts with %s: %v, want %v (message %q)", reason, has, !has, msg)
				}
			}
		})
	}
}
