// Package metrics declares every Prometheus collector of cri-mirror-proxy and
// serves them, with health and pprof endpoints, over HTTP.
//
// Metric names are a public interface: dashboards and alerts depend on them,
// so they are declared once here (see Names) and only ever added to. Every
// label is bounded by configuration — a mirror's configured location, a
// registries.conf prefix, a result or reason from a fixed set — and never
// carries an image name or tag, which would grow without bound.
//
// Nothing registers itself on prometheus.DefaultRegisterer: main builds a
// registry (NewRegistry), calls Register, and passes the registry to
// NewHandler; tests do the same with prometheus.NewRegistry().
package metrics
