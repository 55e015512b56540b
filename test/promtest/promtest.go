// Package promtest reads the Prometheus text exposition format for the e2e tests, the
// benchmark and test/critest.sh. It parses with prometheus/common/expfmt and flattens the
// families into one sample per series, as the text format writes them: a histogram becomes
// its NAME_bucket (with le), NAME_sum and NAME_count series, a summary its quantiles, NAME_sum
// and NAME_count.
//
//	set, err := promtest.Scrape(ctx, "127.0.0.1:9464")
//	ok := set.Sum("cri_mirror_pull_attempts_total", map[string]string{"result": "success"})
package promtest

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sample is one series of the exposition: a name, its labels and its value.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Set is every sample of one scrape.
type Set []Sample

// Parse reads the text format. A malformed exposition is an error: the proxy's own
// endpoint must always be readable.
func Parse(r io.Reader) (Set, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	names := make([]string, 0, len(families))
	for name := range families {
		names = append(names, name)
	}
	sort.Strings(names)
	var out Set
	for _, name := range names {
		out = appendFamily(out, families[name])
	}
	return out, nil
}

// FromFamilies is the samples of families, as a registry's Gather returns
// them, in their order: what Parse gives for their text form.
func FromFamilies(families []*dto.MetricFamily) Set {
	var out Set
	for _, f := range families {
		out = appendFamily(out, f)
	}
	return out
}

func appendFamily(out Set, f *dto.MetricFamily) Set {
	name := f.GetName()
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		with := func(k, v string) map[string]string {
			c := make(map[string]string, len(labels)+1)
			for lk, lv := range labels {
				c[lk] = lv
			}
			c[k] = v
			return c
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			out = append(out, Sample{name, labels, m.GetCounter().GetValue()})
		case dto.MetricType_GAUGE:
			out = append(out, Sample{name, labels, m.GetGauge().GetValue()})
		case dto.MetricType_HISTOGRAM:
			h := m.GetHistogram()
			inf := false
			for _, b := range h.GetBucket() {
				inf = inf || math.IsInf(b.GetUpperBound(), 1)
				out = append(out, Sample{name + "_bucket", with("le", formatFloat(b.GetUpperBound())), float64(b.GetCumulativeCount())})
			}
			if !inf { // the +Inf bucket is the count
				out = append(out, Sample{name + "_bucket", with("le", "+Inf"), float64(h.GetSampleCount())})
			}
			out = append(out,
				Sample{name + "_sum", labels, h.GetSampleSum()},
				Sample{name + "_count", labels, float64(h.GetSampleCount())})
		case dto.MetricType_SUMMARY:
			s := m.GetSummary()
			for _, q := range s.GetQuantile() {
				out = append(out, Sample{name, with("quantile", formatFloat(q.GetQuantile())), q.GetValue()})
			}
			out = append(out,
				Sample{name + "_sum", labels, s.GetSampleSum()},
				Sample{name + "_count", labels, float64(s.GetSampleCount())})
		default:
			out = append(out, Sample{name, labels, m.GetUntyped().GetValue()})
		}
	}
	return out
}

func formatFloat(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// Scrape reads http://addr/metrics (addr is host:port). It asks for plain text without
// compression, so that what the server spends on an answer is the same every time (the
// benchmark subtracts it from the proxy's allocation counters).
func Scrape(ctx context.Context, addr string) (Set, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain")
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", addr, resp.Status)
	}
	s, err := Parse(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", addr, err)
	}
	return s, nil
}

// Sum adds the samples of name whose labels include every label in match (nil: all).
func (s Set) Sum(name string, match map[string]string) float64 {
	return s.SumFunc(name, func(l map[string]string) bool { return Matches(l, match) })
}

// SumFunc adds the samples of name whose labels pass keep (nil: all).
func (s Set) SumFunc(name string, keep func(labels map[string]string) bool) float64 {
	var total float64
	for _, x := range s {
		if x.Name == name && (keep == nil || keep(x.Labels)) {
			total += x.Value
		}
	}
	return total
}

// Failed adds the samples of name matching match whose result label is not "success".
func (s Set) Failed(name string, match map[string]string) float64 {
	return s.SumFunc(name, func(l map[string]string) bool { return Matches(l, match) && l["result"] != "success" })
}

// Has reports whether any sample is called name.
func (s Set) Has(name string) bool {
	for _, x := range s {
		if x.Name == name {
			return true
		}
	}
	return false
}

// Dump renders the samples whose name starts with prefix, buckets left out, sorted: for
// failure messages.
func (s Set) Dump(prefix string) string {
	var lines []string
	for _, x := range s {
		if !strings.HasPrefix(x.Name, prefix) || strings.HasSuffix(x.Name, "_bucket") {
			continue
		}
		var ls []string
		for k, v := range x.Labels {
			ls = append(ls, fmt.Sprintf("%s=%q", k, v))
		}
		sort.Strings(ls)
		lines = append(lines, fmt.Sprintf("%s{%s} %v", x.Name, strings.Join(ls, ","), x.Value))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// Matches reports whether have holds every label of want.
func Matches(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}
