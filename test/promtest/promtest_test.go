package promtest

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

const exposition = `# HELP cri_mirror_pull_attempts_total Pull attempts.
# TYPE cri_mirror_pull_attempts_total counter
cri_mirror_pull_attempts_total{mirror="127.0.0.1:5000/m1",result="success"} 3
cri_mirror_pull_attempts_total{mirror="127.0.0.1:5000/m1",result="error"} 1
cri_mirror_pull_attempts_total{mirror="source",result="success"} 2
# HELP cri_mirror_aliases Aliases.
# TYPE cri_mirror_aliases gauge
cri_mirror_aliases 7
# HELP d Durations.
# TYPE d histogram
d_bucket{mirror="a\"b",le="0.5"} 1
d_bucket{mirror="a\"b",le="+Inf"} 4
d_sum{mirror="a\"b"} 2.5
d_count{mirror="a\"b"} 4
`

func TestParse(t *testing.T) {
	set, err := Parse(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		match map[string]string
		want  float64
	}{
		{"cri_mirror_pull_attempts_total", nil, 6},
		{"cri_mirror_pull_attempts_total", map[string]string{"result": "success"}, 5},
		{"cri_mirror_pull_attempts_total", map[string]string{"mirror": "source", "result": "success"}, 2},
		{"cri_mirror_aliases", nil, 7},
		{"d_bucket", map[string]string{"le": "0.5"}, 1},
		{"d_bucket", map[string]string{"le": "+Inf"}, 4},
		{"d_sum", map[string]string{"mirror": `a"b`}, 2.5},
		{"d_count", nil, 4},
		{"absent", nil, 0},
	} {
		if got := set.Sum(tc.name, tc.match); got != tc.want {
			t.Errorf("Sum(%s, %v) = %v, want %v", tc.name, tc.match, got, tc.want)
		}
	}
	if got := set.Failed("cri_mirror_pull_attempts_total", nil); got != 1 {
		t.Errorf("Failed = %v, want 1", got)
	}
	if !set.Has("d_count") || set.Has("d") {
		t.Errorf("Has: a histogram is its _bucket, _sum and _count series")
	}
	if got := set.Dump("cri_mirror_aliases"); got != "cri_mirror_aliases{} 7" {
		t.Errorf("Dump = %q", got)
	}
}

func TestParseRejectsGarbage(t *testing.T) {
	if _, err := Parse(strings.NewReader("cri_mirror_aliases{mirror=\"x\" 7\n")); err == nil {
		t.Error("a malformed line parsed without error")
	}
}

// FromFamilies reads what a registry gathers as Parse reads its text form:
// a histogram is its _bucket, _sum and _count series.
func TestFromFamilies(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "d", Buckets: []float64{0.5}}, []string{"mirror"})
	reg.MustRegister(h)
	for _, v := range []float64{0.1, 1, 0.7, 0.7} {
		h.WithLabelValues(`a"b`).Observe(v)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := FromFamilies(families)
	want, err := Parse(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"d_bucket", "d_sum", "d_count"} {
		if g, w := got.Dump(name), want.Dump(name); g != w {
			t.Errorf("%s:\n%s\nwant (as parsed)\n%s", name, g, w)
		}
	}
}
