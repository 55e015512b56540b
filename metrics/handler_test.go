package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestHandlerHealthz(t *testing.T) {
	h := NewHandler(prometheus.NewRegistry(), func(context.Context) error { return errors.New("not ready") })
	// Liveness does not depend on readiness.
	if code, body := get(t, h, "/healthz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz = %d %q, want 200 ok", code, body)
	}
}

func TestHandlerReadyz(t *testing.T) {
	var failing atomic.Bool
	var sawDeadline atomic.Bool
	ready := func(ctx context.Context) error {
		if d, ok := ctx.Deadline(); ok && time.Until(d) <= ReadyTimeout {
			sawDeadline.Store(true)
		}
		if failing.Load() {
			return errors.New("runtime unix:///run/containerd/containerd.sock: connection refused")
		}
		return nil
	}
	h := NewHandler(prometheus.NewRegistry(), ready)

	if code, body := get(t, h, "/readyz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Errorf("/readyz while ready = %d %q, want 200 ok", code, body)
	}
	if !sawDeadline.Load() {
		t.Error("ready was called without a deadline")
	}
	failing.Store(true)
	code, body := get(t, h, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "connection refused") {
		t.Errorf("/readyz while failing = %d %q, want 503 with the error", code, body)
	}
	failing.Store(false)
	if code, _ := get(t, h, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after recovery = %d, want 200", code)
	}
}

func TestHandlerReadyzNilFunc(t *testing.T) {
	if code, _ := get(t, NewHandler(prometheus.NewRegistry(), nil), "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz with nil ready = %d, want 200", code)
	}
}

func TestHandlerMetrics(t *testing.T) {
	m := New()
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	m.RuntimeUp.Set(1)
	m.Aliases.Set(42)
	code, body := get(t, NewHandler(reg, nil), "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{"cri_mirror_runtime_up 1", "cri_mirror_aliases 42", `cri_mirror_config_reloads_total{result="failure"} 0`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}

func TestHandlerPprof(t *testing.T) {
	paths := []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline", "/debug/pprof/profile?seconds=1"}
	off := NewHandler(prometheus.NewRegistry(), nil)
	for _, path := range paths {
		if code, _ := get(t, off, path); code != http.StatusNotFound {
			t.Errorf("without WithPprof %s = %d, want 404", path, code)
		}
	}
	h := NewHandler(prometheus.NewRegistry(), nil, WithPprof())
	for _, path := range paths[:3] {
		if code, _ := get(t, h, path); code != http.StatusOK {
			t.Errorf("%s = %d, want 200", path, code)
		}
	}
	if code, _ := get(t, h, "/nope"); code != http.StatusNotFound {
		t.Errorf("/nope = %d, want 404", code)
	}
}
