package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// The verdicts: each target is met only on a measurement that can show it.

func TestLatencyCheck(t *testing.T) {
	row := func(proxy50, proxy99, hop time.Duration) latencyRow {
		return latencyRow{call: "ImageStatus, pass-through (no alias)", images: 10, st: map[string]stats{
			"proxy": {n: 100, p50: proxy50, p99: proxy99},
			"hop":   {n: 100, p50: hop, p99: 2 * hop},
			"hop-b": {n: 100, p50: hop, p99: 2 * hop},
		}}
	}
	us := time.Microsecond
	for _, tc := range []struct {
		name                string
		proxy50, proxy99, h time.Duration
		met                 bool
	}{
		{"within", 105 * us, 230 * us, 100 * us, true},
		{"p50 over", 106 * us, 200 * us, 100 * us, false},
		{"p99 over", 100 * us, 231 * us, 100 * us, false},
		{"no hop figures", time.Second, time.Second, 0, false},
		{"no proxy figures", 0, 0, 100 * us, false},
	} {
		c := latencyCheck(row(tc.proxy50, tc.proxy99, tc.h), passP50, passP99)
		if c.met != tc.met {
			t.Errorf("%s: met = %v, want %v (%s)", tc.name, c.met, tc.met, c.measured)
		}
	}
	// The interval of the p99 ratio is shown beside it when it was taken,
	// and does not change the verdict, which is on the ratio measured.
	r := row(100*us, 230*us, 100*us)
	r.p99CI = [2]float64{0.98, 1.24}
	if c := latencyCheck(r, passP50, passP99); !c.met || !strings.Contains(c.measured, "p99 1.15× (90 % CI 0.98–1.24×)") {
		t.Errorf("met %v, measured %q; want met, with the interval beside the p99", c.met, c.measured)
	}
	if c := latencyCheck(row(100*us, 230*us, 100*us), passP50, passP99); strings.Contains(c.measured, "CI") {
		t.Errorf("no interval taken, yet one is shown: %q", c.measured)
	}
}

// A hop on the proxy's threads, when measured, is reported beside the
// verdict, which stays against the hop the targets are defined on.
func TestLatencyCheckWithHopN(t *testing.T) {
	us := time.Microsecond
	row := latencyRow{call: "ImageStatus, pass-through (no alias)", images: 10, st: map[string]stats{
		"proxy":  {n: 100, p50: 100 * us, p99: 200 * us},
		"hop":    {n: 100, p50: 100 * us, p99: 200 * us},
		"hop-b":  {n: 100, p50: 100 * us, p99: 200 * us},
		hopNName: {n: 100, p50: 80 * us, p99: 160 * us},
	}}
	c := latencyCheck(row, passP50, passP99)
	if !c.met || !strings.Contains(c.measured, "proxy/hop-n: 1.25×, 1.25×") {
		t.Errorf("met %v, measured %q; want met against hop, with proxy/hop-n 1.25× shown", c.met, c.measured)
	}
	delete(row.st, hopNName)
	if c := latencyCheck(row, passP50, passP99); strings.Contains(c.measured, "hop-n") {
		t.Errorf("no hop-n measured, yet the verdict names it: %q", c.measured)
	}
}

func TestListCostCheck(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name       string
		proxy, hop time.Duration
		allocs     float64
		met        bool
	}{
		{"within", 9 * ms, 5 * ms, 447, true},
		{"CPU over", 11 * ms, 5 * ms, 447, false},
		{"allocations over", 6 * ms, 5 * ms, 1001, false},
		{"no hop CPU", 6 * ms, 0, 447, false},
		{"no allocation count", 6 * ms, 5 * ms, 0, false},
	} {
		c := listCostCheck(latencyRow{call: "ListImages", images: 5000, proxyCPU: tc.proxy, hopCPU: tc.hop, allocs: tc.allocs})
		if c.met != tc.met {
			t.Errorf("%s: met = %v, want %v (%s)", tc.name, c.met, tc.met, c.measured)
		}
	}
}

// The memory limit of the proxy with many aliases is its own.
func TestMemoryChecks(t *testing.T) {
	b := &bench{cfg: &config{}, memory: []memoryRow{
		{state: "idle, 5000 images + aliases, after ListImages", rss: 45 * 1024},
		{state: "idle, 20000 aliases", rss: 45 * 1024, many: true},
		{state: "1000 concurrent ImageStatus callers", rss: 90 * 1024},
	}}
	checks := b.checks()
	if len(checks) != 2 {
		t.Fatalf("%d checks, want 2 (the idle states): %+v", len(checks), checks)
	}
	if checks[0].met || !checks[1].met {
		t.Errorf("45 MiB: met %v at the 40 MiB limit, %v at the 64 MiB limit; want false, true", checks[0].met, checks[1].met)
	}
}

func TestPullCheck(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	for _, tc := range []struct {
		name             string
		proxy, proxyRT   []time.Duration
		direct, directRT []time.Duration
		met              bool
	}{
		// 1 ms more outside the runtime on a 200 ms direct p50: 1.005×,
		// though the runtime took 10 % longer over the proxy's pulls.
		{"within", ms(111, 221, 331), ms(100, 210, 320), ms(100, 200, 300), ms(90, 190, 290), true},
		// The runtime the same, 5 ms more outside it: 1.025×.
		{"over", ms(105, 205, 305), ms(90, 190, 290), ms(100, 200, 300), ms(90, 190, 290), false},
		// Whole pulls within 1.02×, but only because the runtime was
		// faster over the proxy's pulls: 10 ms more outside it.
		{"over, hidden by the runtime's noise", ms(100, 200, 300), ms(80, 180, 280), ms(100, 200, 300), ms(90, 190, 290), false},
		{"no runtime times", ms(101, 202, 303), nil, ms(100, 200, 300), nil, false},
		{"no direct pulls", ms(100, 200), ms(90, 190), nil, nil, false},
		{"rounds not paired", ms(100, 200, 300), ms(90, 190, 290), ms(100, 200), ms(90, 190), false},
		{"a zero time", ms(100, 0, 300), ms(90, 0, 290), ms(100, 200, 300), ms(90, 190, 290), false},
	} {
		c := pullCheck(pullResult{proxy: tc.proxy, proxyRT: tc.proxyRT, direct: tc.direct, directRT: tc.directRT}, 1.02)
		if c.met != tc.met {
			t.Errorf("%s: met = %v, want %v (%s)", tc.name, c.met, tc.met, c.measured)
		}
	}
}

func TestDedupCheck(t *testing.T) {
	burst := []time.Duration{time.Second, time.Second}
	for _, tc := range []struct {
		name string
		d    dedupResult
		met  bool
	}{
		{"one pull per burst, both witnesses", dedupResult{burst: burst, runtimePulls: []float64{1, 1}, logPulls: []int{1, 1}}, true},
		{"unreadable containerd log", dedupResult{burst: burst, runtimePulls: []float64{1, 1}, logPulls: []int{-1, -1}}, false},
		{"log count missing", dedupResult{burst: burst, runtimePulls: []float64{1, 1}, logPulls: []int{1}}, false},
		{"two runtime pulls", dedupResult{burst: burst, runtimePulls: []float64{1, 2}, logPulls: []int{1, 2}}, false},
		{"witnesses disagree", dedupResult{burst: burst, runtimePulls: []float64{1, 1}, logPulls: []int{1, 0}}, false},
		{"a caller failed", dedupResult{burst: burst, runtimePulls: []float64{1, 1}, logPulls: []int{1, 1}, failed: 1}, false},
		{"no bursts", dedupResult{}, false},
	} {
		tc.d.concurrency = 100
		c := dedupCheck(tc.d)
		if c.met != tc.met {
			t.Errorf("%s: met = %v, want %v (%s)", tc.name, c.met, tc.met, c.measured)
		}
	}
}

// fallbackRows builds a baseline and a case row of reps repetitions: every
// baseline pull takes 100 ms, the case's first pull first and the next ones
// next; of each, the runtime's own pull took 90 ms.
func fallbackRows(reps int, first, next time.Duration, faulty map[string]float64) (*fallbackRow, *fallbackRow) {
	base := &fallbackRow{c: fallbackCases[0]}
	r := &fallbackRow{c: fallbackCases[1], faulty: faulty}
	for range reps {
		var b, c, rt []time.Duration
		for k := range fallbackPulls + 1 {
			b = append(b, 100*time.Millisecond)
			rt = append(rt, 90*time.Millisecond)
			if k == 0 {
				c = append(c, first)
			} else {
				c = append(c, next)
			}
		}
		base.pulls, r.pulls = append(base.pulls, b), append(r.pulls, c)
		base.rt, r.rt = append(base.rt, rt), append(r.rt, slices.Clone(rt))
	}
	return base, r
}

func TestFallbackCheck(t *testing.T) {
	const reps = 3
	tried := map[string]float64{"unreachable": 3, "skipped": 30}
	allow := 10 * time.Millisecond
	for _, tc := range []struct {
		name        string
		first, next time.Duration
		faulty      map[string]float64
		met         bool
	}{
		{"fast, faulty mirror tried", 105 * time.Millisecond, 101 * time.Millisecond, tried, true},
		{"slow first pull", 300 * time.Millisecond, 101 * time.Millisecond, tried, false},
		{"slow next pulls", 105 * time.Millisecond, 150 * time.Millisecond, tried, false},
		{"faulty mirror never tried", 100 * time.Millisecond, 100 * time.Millisecond, map[string]float64{}, false},
		{"no attempt counts", 100 * time.Millisecond, 100 * time.Millisecond, nil, false},
		{"fewer failures than repetitions", 100 * time.Millisecond, 100 * time.Millisecond, map[string]float64{"unreachable": 2}, false},
		{"the faulty mirror served", 100 * time.Millisecond, 100 * time.Millisecond, map[string]float64{"unreachable": 3, "success": 1}, false},
	} {
		base, r := fallbackRows(reps, tc.first, tc.next, tc.faulty)
		c := fallbackCheck(base, r, reps, tc.name, "≤ 10 ms", allow, allow, true)
		if c.met != tc.met {
			t.Errorf("%s: met = %v, want %v (%s)", tc.name, c.met, tc.met, c.measured)
		}
	}
	// A row with a repetition missing measured nothing; nor one without
	// the runtime's times.
	base, r := fallbackRows(reps, 100*time.Millisecond, 100*time.Millisecond, tried)
	r.pulls = r.pulls[:reps-1]
	if c := fallbackCheck(base, r, reps, "short", "≤ 10 ms", allow, allow, true); c.met {
		t.Errorf("a missing repetition was met: %s", c.measured)
	}
	base, r = fallbackRows(reps, 100*time.Millisecond, 100*time.Millisecond, tried)
	r.rt[1] = nil
	if c := fallbackCheck(base, r, reps, "no runtime times", "≤ 10 ms", allow, allow, true); c.met {
		t.Errorf("a repetition without runtime times was met: %s", c.measured)
	}
	// The added time is judged outside the runtime's own pull: a first
	// pull 40 ms slower only because the runtime took 40 ms longer adds
	// nothing; one as fast as the baseline whose runtime was 40 ms faster
	// adds 40 ms.
	base, r = fallbackRows(reps, 140*time.Millisecond, 100*time.Millisecond, tried)
	for i := range r.rt {
		r.rt[i][0] = 130 * time.Millisecond
	}
	if c := fallbackCheck(base, r, reps, "slow runtime", "≤ 10 ms", allow, allow, true); !c.met {
		t.Errorf("a slower runtime pull was counted as added: %s", c.measured)
	}
	base, r = fallbackRows(reps, 100*time.Millisecond, 100*time.Millisecond, tried)
	for i := range r.rt {
		r.rt[i][0] = 50 * time.Millisecond
	}
	if c := fallbackCheck(base, r, reps, "fast runtime", "≤ 10 ms", allow, allow, true); c.met {
		t.Errorf("40 ms added outside the runtime went unseen: %s", c.measured)
	}
}

// checks puts it together: a run that measured nothing meets nothing.
func TestChecksWithoutMeasurements(t *testing.T) {
	b := &bench{cfg: &config{fallbackReps: 3, probeTimeout: 2 * time.Second, stallTimeout: 30 * time.Second}}
	b.latency = []latencyRow{{call: "ImageStatus, pass-through (no alias)", images: 10,
		st: map[string]stats{"proxy": {n: 1, p50: time.Second, p99: time.Second}}}}
	b.pulls = pullResult{proxy: []time.Duration{time.Second}}
	b.dedup = dedupResult{concurrency: 100, burst: []time.Duration{time.Second}, runtimePulls: []float64{1}, logPulls: []int{-1}}
	base, refused := fallbackRows(3, 100*time.Millisecond, 100*time.Millisecond, map[string]float64{})
	_, blackhole := fallbackRows(3, 100*time.Millisecond, 100*time.Millisecond, nil)
	blackhole.c = fallbackCases[2]
	b.fallback = []fallbackRow{*base, *refused, *blackhole}
	b.memory = []memoryRow{{state: "idle after start"}}
	checks := b.checks()
	if len(checks) != 7 {
		t.Fatalf("%d checks, want 7: %+v", len(checks), checks)
	}
	for _, c := range checks {
		if c.met {
			t.Errorf("%s: met on no measurement (%s)", c.target, c.measured)
		}
		if !strings.Contains(c.measured, "not measured") && !strings.Contains(c.measured, "no attempts") &&
			!strings.Contains(c.measured, "-1") && !strings.Contains(c.measured, "faulty mirrors: -") {
			t.Errorf("%s: %q does not say what is missing", c.target, c.measured)
		}
	}
}

func TestTagCheckCost(t *testing.T) {
	ms := time.Millisecond
	heads := []time.Duration{3 * ms, 2 * ms, 4 * ms} // mean 3 ms
	rounds := func(d ...time.Duration) []time.Duration { return d }
	rt := rounds(90*ms, 120*ms, 90*ms)
	for _, tc := range []struct {
		name       string
		on, onRT   []time.Duration
		off, offRT []time.Duration
		hds        []time.Duration
		met        bool
	}{
		// Per-round differences outside the runtime 2, 3, 9 ms: median 3 ms.
		{"within one round trip", rounds(102*ms, 133*ms, 109*ms), rt, rounds(100*ms, 130*ms, 100*ms), rt, heads, true},
		{"over one round trip", rounds(105*ms, 134*ms, 109*ms), rt, rounds(100*ms, 130*ms, 100*ms), rt, heads, false},
		// Whole pulls 10 ms apart, all of it the runtime's: the check adds 0.
		{"the runtime slower", rounds(110*ms, 140*ms, 110*ms), rounds(100*ms, 130*ms, 100*ms), rounds(100*ms, 130*ms, 100*ms), rt, heads, true},
		{"no runtime times", rounds(100 * ms), nil, rounds(100 * ms), nil, heads, false},
		{"no HEADs measured", rounds(100 * ms), rounds(90 * ms), rounds(100 * ms), rounds(90 * ms), nil, false},
		{"rounds do not pair", rounds(100*ms, 100*ms), rounds(90*ms, 90*ms), rounds(100 * ms), rounds(90 * ms), heads, false},
		{"no pulls", nil, nil, nil, nil, heads, false},
	} {
		c := tagCheckCost(pullResult{tagOn: tc.on, tagOnRT: tc.onRT, tagOff: tc.off, tagOffRT: tc.offRT, tagHead: tc.hds, tagHeads: tc.hds})
		if c.met != tc.met {
			t.Errorf("%s: met = %v, want %v (%s)", tc.name, c.met, tc.met, c.measured)
		}
	}
}
