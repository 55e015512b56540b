package metrics

import (
	"context"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadyTimeout bounds one readiness check, so that a hung runtime makes
// /readyz answer 503 rather than hang the kubelet or load-balancer probe.
const ReadyTimeout = 2 * time.Second

// HandlerOption configures NewHandler.
type HandlerOption func(*handlerOptions)

type handlerOptions struct {
	pprof bool
}

// WithPprof mounts the net/http/pprof handlers at /debug/pprof/. They are
// off unless asked for: anyone who can reach the metrics address could
// otherwise read the command line and goroutine stacks, and start CPU
// profiles and traces at will.
func WithPprof() HandlerOption { return func(o *handlerOptions) { o.pprof = true } }

// NewHandler returns the mux of the metrics endpoint:
//
//	/metrics        the families gathered from g
//	/healthz        200 "ok" whenever the process can answer at all
//	/readyz         200 "ok" if ready returns nil, else 503 with its error
//	/debug/pprof/   the net/http/pprof handlers (WithPprof only)
//
// A nil ready counts as always ready. The pprof handlers are mounted on this
// mux explicitly, so nothing depends on http.DefaultServeMux.
func NewHandler(g prometheus.Gatherer, ready func(context.Context) error, opts ...HandlerOption) http.Handler {
	var o handlerOptions
	for _, opt := range opts {
		opt(&o)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		// One broken collector should cost its own series, not the scrape.
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), ReadyTimeout)
			defer cancel()
			if err := ready(ctx); err != nil {
				writeText(w, http.StatusServiceUnavailable, err.Error())
				return
			}
		}
		writeText(w, http.StatusOK, "ok")
	})
	if o.pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func writeText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg + "\n"))
}
