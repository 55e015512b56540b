package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/metrics"
)

// ruleTests is the part of a promtool rule test file this test reads.
type ruleTests struct {
	Tests []struct {
		Name        string `yaml:"name"`
		InputSeries []struct {
			Series string `yaml:"series"`
			Values string `yaml:"values"`
		} `yaml:"input_series"`
	} `yaml:"tests"`
}

// seriesKey renders a metric name and labels as name{a="1",b="2"}, labels sorted.
func seriesKey(name string, labels map[string]string) string {
	var parts []string
	for k, v := range labels {
		parts = append(parts, k+"="+`"`+v+`"`)
	}
	slices.Sort(parts)
	return name + "{" + strings.Join(parts, ",") + "}"
}

// TestAlertTestSeries: the alert tests feed series the way the proxy exports them. Every series
// of a cri_mirror_ family is one the proxy creates at load for rules naming its registry and
// mirror (so the label values are ones the proxy uses, result and reason included), and every
// counter starts at 0 as it does there. The one test named "born at 1" starts its counters
// absent, to show what a series created on its first event costs.
func TestAlertTestSeries(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("prometheus", "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rt ruleTests
	if err := yaml.Unmarshal(data, &rt); err != nil {
		t.Fatal(err)
	}
	if len(rt.Tests) == 0 {
		t.Fatal("alerts_test.yaml has no tests")
	}
	bornAtOne := 0
	for _, test := range rt.Tests {
		type input struct {
			name   string
			labels map[string]string
			values string
		}
		var inputs []input
		rules := map[string]*metrics.Rule{}
		for _, in := range test.InputSeries {
			p := expfmt.NewTextParser(model.UTF8Validation)
			fams, err := p.TextToMetricFamilies(strings.NewReader(in.Series + " 0\n"))
			if err != nil || len(fams) != 1 {
				t.Errorf("%s: cannot read series %s: %v", test.Name, in.Series, err)
				continue
			}
			for name, mf := range fams {
				labels := map[string]string{}
				for _, lp := range mf.GetMetric()[0].GetLabel() {
					if lp.GetName() != "job" && lp.GetName() != "instance" {
						labels[lp.GetName()] = lp.GetValue()
					}
				}
				inputs = append(inputs, input{name, labels, in.Values})
				reg, mirror := labels["registry"], labels["mirror"]
				if reg == "" && mirror != "" {
					reg = "a rule of " + mirror // health and probes are by mirror alone
				}
				if reg == "" {
					continue
				}
				r := rules[reg]
				if r == nil {
					r = &metrics.Rule{Registry: reg}
					rules[reg] = r
				}
				if strings.HasPrefix(name, "cri_mirror_tag_") {
					// Tag check series exist for rules with mirrors a
					// tag-check policy covers.
					r.TagCheck = true
					if len(r.Mirrors) == 0 {
						r.Mirrors = append(r.Mirrors, "a mirror of "+reg)
					}
				}
				switch mirror {
				case "":
				case metrics.MirrorSource:
					r.Source = true
				default:
					r.Mirrors = append(r.Mirrors, mirror)
				}
			}
		}

		m := metrics.New()
		var list []metrics.Rule
		for _, r := range rules {
			list = append(list, *r)
		}
		m.SetRules(list)
		reg := prometheus.NewRegistry()
		if err := m.Register(reg); err != nil {
			t.Fatal(err)
		}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		created := map[string]bool{}
		for _, mf := range mfs {
			for _, metric := range mf.GetMetric() {
				labels := map[string]string{}
				for _, lp := range metric.GetLabel() {
					labels[lp.GetName()] = lp.GetValue()
				}
				created[seriesKey(mf.GetName(), labels)] = true
			}
		}

		born := strings.Contains(test.Name, "born at 1")
		if born {
			bornAtOne++
		}
		for _, in := range inputs {
			key := seriesKey(in.name, in.labels)
			if strings.HasPrefix(in.name, "cri_mirror_") && !created[key] {
				t.Errorf("%s: %s is not a series the proxy creates for these rules", test.Name, key)
			}
			if !strings.HasSuffix(in.name, "_total") {
				continue
			}
			first := strings.Fields(in.values)[0]
			switch {
			case born && !strings.HasPrefix(first, "_"):
				t.Errorf("%s: %s starts at %q; this test is about counters absent before their first event", test.Name, key, first)
			case !born && !(first == "0" || strings.HasPrefix(first, "0x") || strings.HasPrefix(first, "0+")):
				t.Errorf("%s: counter %s starts at %q; the proxy creates it at 0", test.Name, key, first)
			}
		}
	}
	if bornAtOne != 1 {
		t.Errorf("%d tests are about counters born at 1, want 1", bornAtOne)
	}
}
