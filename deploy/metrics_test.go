package deploy

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/metrics"
)

// family is what the binary exports under one name.
type family struct {
	histogram bool
	labels    []string
}

// targetLabels are added by Prometheus to every scraped series.
var targetLabels = []string{"job", "instance"}

// exported returns every metric family the binary exports, with its type and
// labels, taken from the code rather than written down again: the proxy's
// collectors (every vector given one child so it shows up, the gRPC ones
// initialised for a registered CRI service) and the Go, process and build
// collectors main registers, plus Prometheus's own "up".
func exported(t *testing.T) map[string]family {
	t.Helper()
	m := metrics.New()
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	touchVectors(t, m)
	srv := grpc.NewServer()
	runtimeapi.RegisterImageServiceServer(srv, runtimeapi.UnimplementedImageServiceServer{})
	m.GRPC.InitializeMetrics(srv)

	out := map[string]family{}
	gather := func(g prometheus.Gatherer) {
		mfs, err := g.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			f := family{histogram: mf.GetType().String() == "HISTOGRAM"}
			for _, metric := range mf.GetMetric() {
				for _, lp := range metric.GetLabel() {
					if !slices.Contains(f.labels, lp.GetName()) {
						f.labels = append(f.labels, lp.GetName())
					}
				}
			}
			out[mf.GetName()] = f
		}
	}
	gather(reg)
	gather(metrics.NewRegistry())

	// Every name metrics.Names() promises is exported, and no other
	// cri_mirror_/grpc_server_ family: the two views of the code agree.
	for _, name := range metrics.Names() {
		if _, ok := out[name]; !ok {
			t.Errorf("metrics.Names() lists %s, but the registry does not export it", name)
		}
	}
	for name := range out {
		if (strings.HasPrefix(name, "cri_mirror_") || strings.HasPrefix(name, "grpc_server_")) && !slices.Contains(metrics.Names(), name) {
			t.Errorf("%s is exported but missing from metrics.Names()", name)
		}
	}
	out["up"] = family{}
	return out
}

var descLabels = regexp.MustCompile(`variableLabels: \{([^{}]*)\}\}$`)

// touchVectors creates one child in every vector field of m, so that its
// family (with its label names) appears in a gather. The number of labels
// comes from the collector's own description.
func touchVectors(t *testing.T, m *metrics.Metrics) {
	t.Helper()
	v := reflect.ValueOf(m).Elem()
	for i := 0; i < v.NumField(); i++ {
		if !v.Type().Field(i).IsExported() {
			continue
		}
		field := v.Field(i)
		c, ok := field.Interface().(prometheus.Collector)
		if !ok {
			continue
		}
		with := field.MethodByName("WithLabelValues")
		if !with.IsValid() {
			continue // a plain Gauge/Counter, or the gRPC metrics
		}
		ch := make(chan *prometheus.Desc, 1)
		c.Describe(ch)
		d := (<-ch).String()
		match := descLabels.FindStringSubmatch(d)
		if match == nil {
			t.Fatalf("cannot read the labels of %s from %s", v.Type().Field(i).Name, d)
		}
		n := len(strings.Split(match[1], ","))
		if match[1] == "" {
			n = 0
		}
		args := make([]reflect.Value, n)
		for j := range args {
			args[j] = reflect.ValueOf(fmt.Sprintf("x%d", j))
		}
		with.Call(args)
	}
}

// labelsOf returns the labels a metric name, as written in a query, may be
// matched or grouped on; ok is false when the binary does not export it.
func labelsOf(fams map[string]family, name string) (labels []string, ok bool) {
	if f, found := fams[name]; found {
		return append(slices.Clone(f.labels), targetLabels...), true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, cut := strings.CutSuffix(name, suffix)
		if f, found := fams[base]; cut && found && f.histogram {
			labels = append(slices.Clone(f.labels), targetLabels...)
			if suffix == "_bucket" {
				labels = append(labels, "le")
			}
			return labels, true
		}
	}
	return nil, false
}

// checkExpr checks one PromQL expression against the exported families and
// returns the labels its result may carry (for legends and annotations).
func checkExpr(t *testing.T, fams map[string]family, where, expr string) (resultLabels []string) {
	t.Helper()
	a, err := analyze(expr)
	if err != nil {
		t.Errorf("%s: cannot read %q: %v", where, expr, err)
		return nil
	}
	if len(a.selectors) == 0 {
		t.Errorf("%s: %q reads no metric", where, expr)
	}
	var all []string
	for _, s := range a.selectors {
		labels, ok := labelsOf(fams, s.metric)
		if !ok {
			t.Errorf("%s: metric %s is not exported by cri-mirror-proxy", where, s.metric)
			continue
		}
		for _, l := range s.labels {
			if !slices.Contains(labels, l) {
				t.Errorf("%s: %s has no label %q (it has %v)", where, s.metric, l, labels)
			}
		}
		all = append(all, labels...)
	}
	for _, g := range a.groupings {
		var scope []string
		for _, m := range g.metrics {
			labels, _ := labelsOf(fams, m)
			scope = append(scope, labels...)
		}
		// Buckets summed without le lose the histogram: histogram_quantile
		// over them returns nothing.
		if g.keyword == "by" && !slices.Contains(g.labels, "le") &&
			slices.ContainsFunc(g.metrics, func(m string) bool { return strings.HasSuffix(m, "_bucket") }) {
			t.Errorf("%s: by (%s) over histogram buckets must keep le", where, strings.Join(g.labels, ", "))
		}
		for _, l := range g.labels {
			if !slices.Contains(scope, l) {
				t.Errorf("%s: %s (%s) names label %q, which none of %v has", where, g.keyword, strings.Join(g.labels, ", "), l, g.metrics)
			}
		}
	}
	if by, ok := a.byLabels(); ok {
		return by
	}
	return all
}

func TestExportedFamilies(t *testing.T) {
	fams := exported(t)
	for name, want := range map[string]family{
		"cri_mirror_pull_attempt_duration_seconds": {histogram: true, labels: []string{"registry", "mirror", "result"}},
		"grpc_server_handling_seconds":             {histogram: true, labels: []string{"grpc_type", "grpc_service", "grpc_method"}},
		"cri_mirror_mirror_healthy":                {labels: []string{"mirror"}},
		"process_resident_memory_bytes":            {},
	} {
		got := fams[name]
		slices.Sort(got.labels)
		slices.Sort(want.labels)
		if got.histogram != want.histogram || !slices.Equal(got.labels, want.labels) {
			t.Errorf("%s: got %+v, want %+v", name, got, want)
		}
	}
}

func TestAnalyze(t *testing.T) {
	for _, tc := range []struct {
		expr      string
		selectors string // metric{labels} ...
		groupings string // keyword(labels)<-metrics ...
		err       string
	}{
		{expr: `up == 0`, selectors: "up{}"},
		{expr: `sum by (mirror) (rate(a_total{job="x", result=~"e|t"}[5m])) / on (mirror) group_left sum(b{mirror!="source"})`,
			selectors: `a_total{job,result} b{mirror}`, groupings: "by(mirror)<-a_total on(mirror)<-a_total,b group_left()<-a_total,b"},
		{expr: `histogram_quantile(0.95, sum(rate(h_bucket{le!="+Inf"}[$__rate_interval])) by (le, grpc_method))`,
			selectors: "h_bucket{le}", groupings: "by(le,grpc_method)<-h_bucket"},
		{expr: `count(x{a="1"} == 0) or vector(0)`, selectors: "x{a}"},
		{expr: `{__name__="named", a="b"} offset 5m`, selectors: "named{a}"},
		{expr: "rate(x[5m]) # a comment with y{z=\"1\"}\n > 1e-3", selectors: "x{}"},
		{expr: `sum without (instance) (x)`, selectors: "x{}", groupings: "without(instance)<-x"},
		{expr: `sum by (a) (x`, err: "unbalanced ("},
		{expr: `x{a=1}`, err: "quoted value"},
		{expr: `sum by (a)`, err: "without an expression"},
		{expr: `x{a="unterminated}`, err: "unterminated string"},
	} {
		a, err := analyze(tc.expr)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("analyze(%q) = %v, want error %q", tc.expr, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("analyze(%q): %v", tc.expr, err)
			continue
		}
		var sels, groups []string
		for _, s := range a.selectors {
			sels = append(sels, s.metric+"{"+strings.Join(s.labels, ",")+"}")
		}
		for _, g := range a.groupings {
			groups = append(groups, g.keyword+"("+strings.Join(g.labels, ",")+")<-"+strings.Join(g.metrics, ","))
		}
		if got := strings.Join(sels, " "); got != tc.selectors {
			t.Errorf("analyze(%q) selectors %q, want %q", tc.expr, got, tc.selectors)
		}
		if got := strings.Join(groups, " "); got != tc.groupings {
			t.Errorf("analyze(%q) groupings %q, want %q", tc.expr, got, tc.groupings)
		}
	}
}
