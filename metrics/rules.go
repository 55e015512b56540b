package metrics

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Rule is what the metrics need to know of one registries.conf rule: the
// registry label of its pulls and the mirror labels of its candidates.
type Rule struct {
	// Registry is the rule's prefix, or RegistryNone for references no rule
	// matches.
	Registry string
	// Mirrors are the locations of the rule's mirrors.
	Mirrors []string
	// Source is set when the rule's source may be contacted (not blocked):
	// its pulls then have attempts with mirror="source".
	Source bool
	// TagCheck is set when a tag-check policy other than off can apply to
	// the rule's pulls: its tag check series exist then.
	TagCheck bool
}

// SetRules makes the per-rule and per-mirror series match the rules loaded:
// call it after the first load and after every successful reload.
//
// Every counter a rule can move is created at zero, so that the first event
// of a series is an increase Prometheus sees (a series born at 1 has no
// earlier sample, and increase() over it is empty: an alert on the first
// blocked pull would never fire). cri_mirror_mirror_healthy of a mirror
// without a series yet is set to 1, the breaker's state before any failure;
// a mirror that already has one keeps it.
//
// Series whose registry or mirror no rule names any more are deleted, so a
// removed mirror's health (and its alert) goes away. The rule for
// references no rule matches (RegistryNone, source only) is always added.
//
// The attempt duration histogram is not created ahead: a quantile of empty
// buckets says nothing, and each child costs a series per bucket.
func (m *Metrics) SetRules(rules []Rule) {
	m.rulesMu.Lock()
	defer m.rulesMu.Unlock()

	rules = append(slices.Clone(rules), Rule{Registry: RegistryNone, Source: true})
	registries := map[string]bool{}
	tagChecked := map[string]bool{}
	mirrors := map[string]bool{}
	pairs := map[[2]string]bool{} // registry, mirror
	for _, r := range rules {
		registries[r.Registry] = true
		if r.TagCheck && len(r.Mirrors) > 0 {
			tagChecked[r.Registry] = true
		}
		for _, mirror := range r.Mirrors {
			mirrors[mirror] = true
			pairs[[2]string{r.Registry, mirror}] = true
		}
		if r.Source {
			pairs[[2]string{r.Registry, MirrorSource}] = true
		}
	}

	keep := func(l map[string]string) bool {
		if reg, ok := l["registry"]; ok && !registries[reg] {
			return false
		}
		if mirror, ok := l["mirror"]; ok {
			if reg, ok := l["registry"]; ok {
				return pairs[[2]string{reg, mirror}]
			}
			return mirrors[mirror]
		}
		return true
	}
	for _, v := range []*prometheus.MetricVec{
		m.AttemptDuration.MetricVec, m.Attempts.MetricVec, m.AttemptFailures.MetricVec,
		m.Fallbacks.MetricVec, m.SourcePulls.MetricVec, m.Pulls.MetricVec,
		m.Probes.MetricVec, m.MirrorHealthy.MetricVec, m.DigestSubstitutions.MetricVec,
	} {
		for _, l := range children(v) {
			if !keep(l) {
				v.Delete(l)
			}
		}
	}
	for _, v := range []*prometheus.MetricVec{m.TagChecks.MetricVec, m.TagChanges.MetricVec, m.TagCheckDuration.MetricVec} {
		for _, l := range children(v) {
			if !tagChecked[l["registry"]] {
				v.Delete(l)
			}
		}
	}

	for reg := range registries {
		m.Fallbacks.WithLabelValues(reg)
		m.SourcePulls.WithLabelValues(reg)
		for _, res := range PullResults {
			m.Pulls.WithLabelValues(reg, res)
		}
		for _, from := range IndexFromValues {
			for _, res := range SubstitutionResults {
				if (from == IndexFromNone) == (res == SubstitutionNoIndex) {
					m.DigestSubstitutions.WithLabelValues(reg, from, res)
				}
			}
		}
	}
	for reg := range tagChecked {
		for _, res := range TagCheckResults {
			m.TagChecks.WithLabelValues(reg, res)
		}
		m.TagChanges.WithLabelValues(reg)
		m.TagCheckDuration.WithLabelValues(reg)
	}
	for p := range pairs {
		for _, res := range AttemptResults {
			m.Attempts.WithLabelValues(p[0], p[1], res)
		}
		// The latency of successful attempts starts at 0 too, so that a
		// rate over it has a baseline however soon after start the first
		// pulls come (17 series a pair; the other results' latency series
		// appear with their first attempt).
		m.AttemptDuration.WithLabelValues(p[0], p[1], ResultSuccess)
		for _, reason := range FailureReasons {
			m.AttemptFailures.WithLabelValues(p[0], p[1], reason)
		}
	}
	have := map[string]bool{}
	for _, l := range children(m.MirrorHealthy.MetricVec) {
		have[l["mirror"]] = true
	}
	for mirror := range mirrors {
		for _, mode := range ProbeModes {
			for _, res := range ProbeResults {
				m.Probes.WithLabelValues(mirror, mode, res)
			}
		}
		if !have[mirror] {
			m.MirrorHealthy.WithLabelValues(mirror).Set(1)
		}
	}
}

// children returns the label sets of the series a vector holds.
func children(v *prometheus.MetricVec) []map[string]string {
	ch := make(chan prometheus.Metric)
	go func() { v.Collect(ch); close(ch) }()
	var out []map[string]string
	for metric := range ch {
		var pb dto.Metric
		if err := metric.Write(&pb); err != nil {
			continue // cannot happen for the vectors of this package
		}
		l := make(map[string]string, len(pb.GetLabel()))
		for _, lp := range pb.GetLabel() {
			l[lp.GetName()] = lp.GetValue()
		}
		out = append(out, l)
	}
	return out
}
