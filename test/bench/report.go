package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// environment is what the report says about where it ran.
type environment struct {
	cpus       int
	cpu        string
	kernel     string
	goVersion  string
	containerd string
}

func describeEnvironment(ctx context.Context, b *bench) environment {
	e := environment{cpus: runtime.NumCPU(), goVersion: runtime.Version(), containerd: runtimeVersion(ctx, b.direct)}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				e.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.kernel = strings.TrimSpace(string(data))
	}
	return e
}

// check is one target, judged. A target is met only when every input of
// its verdict was measured: a missing figure (no reference time, no attempt
// on the faulty mirror, an unreadable containerd log) is a miss, never a
// pass by default.
type check struct {
	target, limit, measured string
	met                     bool
}

func pct(r float64) string { return fmt.Sprintf("%.2f×", r) }

// The targets of the pass-through calls (proxy/hop ratios) and of the
// proxy's own cost and memory.
const (
	passP50, passP99 = 1.05, 1.15 // ImageStatus and ListImages with the large set
	listCPU          = 2.0        // ListImages, large set: proxy CPU per call / the hop's
	listAllocs       = 1000       // ListImages, large set: proxy allocations per call
	rssLimit         = 40 * 1024  // KiB, every idle state up to the large set
	manyRSSLimit     = 64 * 1024  // KiB, with manyAliases aliases
)

func (b *bench) checks() []check {
	var out []check
	for _, row := range b.latency {
		switch {
		case strings.HasPrefix(row.call, "ImageStatus"):
			out = append(out, latencyCheck(row, passP50, passP99))
		case row.call == "ListImages" && row.images >= 5000:
			out = append(out, latencyCheck(row, passP50, passP99), listCostCheck(row))
		}
	}
	if len(b.pulls.proxy) > 0 || len(b.pulls.direct) > 0 {
		out = append(out, pullCheck(b.pulls, 1.02))
	}
	if len(b.pulls.tagOn) > 0 {
		out = append(out, tagCheckCost(b.pulls))
	}
	if len(b.dedup.burst) > 0 || len(b.dedup.runtimePulls) > 0 {
		out = append(out, dedupCheck(b.dedup))
	}
	if base := b.fallbackRow("baseline"); base != nil {
		const allowance = 10 * time.Millisecond
		if r := b.fallbackRow("refused"); r != nil {
			out = append(out, fallbackCheck(base, r, b.cfg.fallbackReps, "refused first mirror: added time, first pull / next 10 (p50)",
				"≤ 10 ms", allowance, allowance, true))
		}
		if r := b.fallbackRow("blackhole"); r != nil {
			// By design a mirror that accepts connections and never answers
			// is "slow", not dead: the probe leaves the pull to the runtime,
			// and the stall window abandons it (sampled once a second).
			bound := b.cfg.probeTimeout + b.cfg.stallTimeout + time.Second
			out = append(out, fallbackCheck(base, r, b.cfg.fallbackReps, "black-holed first mirror: added time, first pull",
				fmt.Sprintf("≤ probe timeout %s + stall window %s + 1s progress tick (+10 ms)", b.cfg.probeTimeout, b.cfg.stallTimeout),
				bound+allowance, 0, false))
			out = append(out, fallbackCheck(base, r, b.cfg.fallbackReps, "black-holed first mirror: added time, next 10 (p50)",
				"~0 (≤ 10 ms)", 0, allowance, true))
		}
	}
	for _, m := range b.memory {
		if !strings.HasPrefix(m.state, "idle") {
			continue
		}
		limit := int64(rssLimit)
		if m.many {
			limit = manyRSSLimit
		}
		c := check{target: "proxy VmRSS " + m.state, limit: "≤ " + mib(limit), measured: mib(m.rss), met: m.rss > 0 && m.rss <= limit}
		if m.rss <= 0 {
			c.measured = "not measured"
		}
		out = append(out, c)
	}
	return out
}

// ciRange is "lo–hi×", or "-" when no interval was taken.
func ciRange(ci [2]float64) string {
	if ci[1] <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f–%s", ci[0], pct(ci[1]))
}

// ciText is ciRange as " (90 % CI lo–hi×)", or nothing.
func ciText(ci [2]float64) string {
	if ci[1] <= 0 {
		return ""
	}
	return " (90 % CI " + ciRange(ci) + ")"
}

// latencyCheck judges proxy/hop at p50 and p99 against their limits. Both
// latencies of both percentiles must have been measured.
func latencyCheck(row latencyRow, p50Limit, p99Limit float64) check {
	proxy, hop, hopB := row.st["proxy"], row.st["hop"], row.st["hop-b"]
	c := check{target: fmt.Sprintf("%s, %d images: proxy/hop p50 and p99", row.call, row.images),
		limit: fmt.Sprintf("p50 ≤ %s, p99 ≤ %s", pct(p50Limit), pct(p99Limit))}
	p50, ok50 := ratioOf(proxy.p50, hop.p50)
	p99, ok99 := ratioOf(proxy.p99, hop.p99)
	if !ok50 || !ok99 {
		c.measured = fmt.Sprintf("not measured (proxy p50 %s p99 %s, hop p50 %s p99 %s)", us(proxy.p50), us(proxy.p99), us(hop.p50), us(hop.p99))
		return c
	}
	c.measured = fmt.Sprintf("p50 %s, p99 %s%s (hop-b/hop: %s, %s)", pct(p50), pct(p99), ciText(row.p99CI),
		pct(ratio(hopB.p50, hop.p50)), pct(ratio(hopB.p99, hop.p99)))
	if n, ok := row.st[hopNName]; ok {
		c.measured += fmt.Sprintf("; proxy/hop-n: %s, %s", pct(ratio(proxy.p50, n.p50)), pct(ratio(proxy.p99, n.p99)))
	}
	c.met = p50 <= p50Limit && p99 <= p99Limit
	return c
}

// listCostCheck judges the proxy's own cost of a large ListImages: its CPU
// per call against the hop's, and its allocations per call.
func listCostCheck(row latencyRow) check {
	c := check{target: fmt.Sprintf("%s, %d images: proxy CPU/call vs hop's; proxy allocs/call", row.call, row.images),
		limit: fmt.Sprintf("≤ %.0f× hop; ≤ %d", listCPU, listAllocs)}
	if row.proxyCPU <= 0 || row.hopCPU <= 0 || row.allocs <= 0 {
		c.measured = fmt.Sprintf("not measured (CPU/call proxy %s hop %s, %.0f allocs/call)", us(row.proxyCPU), us(row.hopCPU), row.allocs)
		return c
	}
	r := float64(row.proxyCPU) / float64(row.hopCPU)
	c.measured = fmt.Sprintf("%s (%s vs %s); %.0f", pct(r), us(row.proxyCPU), us(row.hopCPU), row.allocs)
	c.met = r <= listCPU && row.allocs <= listAllocs
	return c
}

// pullCheck judges what the proxy adds to a mirror pull, as a ratio to
// the direct pull: direct p50 plus the median of the per-round differences
// of the time outside the runtime's own pull (runtimeLog), on direct p50.
// The runtime's pull varies from one to the next by more than the limit
// allows on a small machine (a bare hop measured 0.996–1.030× by whole
// pulls), so whole pulls are shown beside it, not judged; so is the
// runtime's own time for each, which shows whether the runtime worked
// slower for the proxy. Every round needs both pulls and their runtime
// times.
func pullCheck(p pullResult, limit float64) check {
	c := check{target: "mirror pull: proxy/direct, the proxy's added time outside the runtime's own pull (median of the per-round differences) on direct p50",
		limit: "≤ " + pct(limit)}
	added, ok := addedOutside(p.proxy, p.proxyRT, p.direct, p.directRT)
	whole, okWhole := pairedRatio(p.proxy, p.direct)
	base := median(p.direct)
	if !ok || !okWhole || base <= 0 {
		c.measured = fmt.Sprintf("not measured (%d proxy and %d direct pulls, %d and %d runtime times)", len(p.proxy), len(p.direct), len(p.proxyRT), len(p.directRT))
		return c
	}
	r := 1 + float64(added)/float64(base)
	hop, _ := addedOutside(p.hop, p.hopRT, p.direct, p.directRT)
	// Three decimals: at two, 1.022× would read as the limit it misses.
	c.measured = fmt.Sprintf("%.3f× (%s on %s; whole pulls: paired %.3f×, p50s %.3f×; the runtime's own pull p50 direct %s, proxy %s; a bare hop: %s, whole pulls %.3f×)",
		r, ms(added), ms(base), whole, ratio(median(p.proxy), base), ms(median(p.directRT)), ms(median(p.proxyRT)), ms(hop), paired(p.hop, p.direct))
	c.met = r <= limit
	return c
}

// outsideText is addedOutside for the tables ("-" when not measured).
func outsideText(a, aRT, b, bRT []time.Duration) string {
	d, ok := addedOutside(a, aRT, b, bRT)
	if !ok {
		return "-"
	}
	return ms(d)
}

// addedOutside is the median over rounds of a's time outside the runtime's
// own pull less b's (see runtimeLog): what a adds to a pull, without the
// runtime's pull-to-pull noise. ok is false unless every series has the
// same, non-zero number of rounds.
func addedOutside(a, aRT, b, bRT []time.Duration) (time.Duration, bool) {
	ao, okA := outside(a, aRT)
	bo, okB := outside(b, bRT)
	if !okA || !okB || len(ao) != len(bo) {
		return 0, false
	}
	return pairedDiff(ao, bo), true
}

// tagCheckCost holds the tag check to what the check may cost a healthy
// pull: one round trip, the HEADs to the source and the mirror sent at
// once (made bare, mean). The cost is pulls with the check on less off,
// median of the per-round differences, outside the runtime's own pull (a
// pull by digest, as the check makes it, costs the runtime less than one
// by tag; and the runtime's pull-to-pull noise is larger than the round
// trip). Whole pulls on − off and the proxy's own time per pull with the
// check less without it (metrics, means) are shown too.
func tagCheckCost(p pullResult) check {
	c := check{target: "tag check on: added time per mirror pull (on − off outside the runtime's own pull, median of the per-round differences)", limit: "≤ one round trip: source and mirror HEADs at once, bare (mean)"}
	added, ok := addedOutside(p.tagOn, p.tagOnRT, p.tagOff, p.tagOffRT)
	if len(p.tagHeads) == 0 || !ok {
		c.measured = fmt.Sprintf("not measured (%d on, %d off, %d and %d runtime times, %d HEAD rounds)", len(p.tagOn), len(p.tagOff), len(p.tagOnRT), len(p.tagOffRT), len(p.tagHeads))
		return c
	}
	heads := mean(p.tagHeads)
	c.measured = fmt.Sprintf("%s (HEADs at once %s, one HEAD alone %s; whole pulls on − off %s; the proxy's own time on − off %s, of which waiting for the check %s)",
		ms(added), ms(heads), ms(mean(p.tagHead)), ms(pairedDiff(p.tagOn, p.tagOff)), ms(p.tagOwn-p.own), ms(p.tagWait))
	c.met = added <= heads
	return c
}

// mean is the mean of d (0 for none).
func mean(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(len(d))
}

// dedupCheck requires, for every burst, exactly one runtime pull by both
// witnesses: the proxy's metrics and containerd's own log. A burst without
// a log count (-1: the log could not be read) is a miss.
func dedupCheck(d dedupResult) check {
	c := check{
		target:   fmt.Sprintf("%d concurrent identical pulls: runtime pulls per burst", d.concurrency),
		limit:    "exactly 1",
		measured: fmt.Sprintf("%v (metrics), %v (containerd log)", d.runtimePulls, d.logPulls),
	}
	if d.failed > 0 {
		c.measured += fmt.Sprintf("; %d callers failed", d.failed)
	}
	if len(d.runtimePulls) == 0 || len(d.logPulls) != len(d.runtimePulls) || len(d.burst) != len(d.runtimePulls) {
		c.measured += fmt.Sprintf("; %d bursts, %d metric counts, %d log counts", len(d.burst), len(d.runtimePulls), len(d.logPulls))
		return c
	}
	if slices.Contains(d.logPulls, -1) {
		c.measured += "; containerd's log could not be read (-1)"
	}
	c.met = d.failed == 0
	for i, n := range d.runtimePulls {
		c.met = c.met && n == 1 && d.logPulls[i] == 1
	}
	return c
}

// fallbackCheck judges the time a faulty first mirror adds to the first
// pull (within first) and to the next ones (within next); a zero limit
// leaves that one out (judgeNext false leaves out the next pulls). The
// faulty mirrors must have been tried: at least as many failed attempts as
// repetitions (each repetition has a faulty mirror of its own) and none
// that succeeded, else the case measured nothing.
func fallbackCheck(base, r *fallbackRow, reps int, target, limit string, first, next time.Duration, judgeNext bool) check {
	c := check{target: target, limit: limit}
	if len(r.pulls) != reps || len(base.pulls) != reps || len(r.rt) != reps || len(base.rt) != reps || reps == 0 {
		c.measured = fmt.Sprintf("not measured (%d of %d repetitions, baseline %d; runtime times %d, %d)", len(r.pulls), reps, len(base.pulls), len(r.rt), len(base.rt))
		return c
	}
	for i := range reps {
		if len(r.pulls[i]) != fallbackPulls+1 || len(base.pulls[i]) != fallbackPulls+1 || base.pulls[i][0] <= 0 ||
			len(r.rt[i]) != len(r.pulls[i]) || len(base.rt[i]) != len(base.pulls[i]) {
			c.measured = fmt.Sprintf("not measured (repetition %d: %d pulls, baseline %d; runtime times %d, %d)", i, len(r.pulls[i]), len(base.pulls[i]), len(r.rt[i]), len(base.rt[i]))
			return c
		}
	}
	addedFirst, addedNext := r.addedFirst(base), r.addedNext(base)
	switch {
	case first > 0 && judgeNext:
		c.measured = ms(addedFirst) + " / " + ms(addedNext)
	case first > 0:
		c.measured = ms(addedFirst)
	default:
		c.measured = ms(addedNext)
	}
	var failed float64
	for result, n := range r.faulty {
		if result != "success" {
			failed += n
		}
	}
	c.measured += "; faulty mirrors: " + describeAttempts(r.faulty)
	if failed < float64(reps) || r.faulty["success"] > 0 {
		return c
	}
	c.met = (first == 0 || addedFirst <= first) && (!judgeNext || addedNext <= next)
	return c
}

func (b *bench) fallbackRow(name string) *fallbackRow {
	for i := range b.fallback {
		if b.fallback[i].c.name == name {
			return &b.fallback[i]
		}
	}
	return nil
}

// report prints the results and, with -out, writes them to a file.
func (b *bench) report() error {
	var w strings.Builder
	b.write(&w)
	fmt.Print(w.String())
	if b.cfg.out == "" {
		return nil
	}
	if err := os.WriteFile(b.cfg.out, []byte(w.String()), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", b.cfg.out, err)
	}
	logf("results written to %s", b.cfg.out)
	return nil
}

func (b *bench) write(w io.Writer) {
	e := b.env
	fmt.Fprintf(w, "# cri-mirror-proxy benchmark results\n\n")
	fmt.Fprintf(w, "- Date: %s\n", b.started.UTC().Format("2006-01-02 15:04 UTC"))
	if b.cfg.command != "" {
		fmt.Fprintf(w, "- Command: `%s`\n", b.cfg.command)
	}
	if b.cfg.revision != "" {
		fmt.Fprintf(w, "- Revision: `%s`\n", b.cfg.revision)
	}
	fmt.Fprintf(w, "- Machine: %d CPUs (%s), Linux %s; %s; %s\n", e.cpus, e.cpu, e.kernel, e.goVersion, e.containerd)
	if b.cfg.proxyArgs == "" {
		fmt.Fprintf(w, "- Proxy: default pull settings (probe on, --probe-timeout %s, --probe-overlap 5m, --mirror-cooldown 30s, --stall-timeout %s, --attempt-timeout 0)\n", b.cfg.probeTimeout, b.cfg.stallTimeout)
	} else {
		fmt.Fprintf(w, "- Proxy: **not the defaults**: `%s` (the targets are defined for the defaults)\n", b.cfg.proxyArgs)
	}
	total := ""
	if b.cfg.since > 0 {
		total = fmt.Sprintf(", %s in all with the environment's start", time.Since(time.Unix(b.cfg.since, 0)).Round(time.Second))
	}
	fmt.Fprintf(w, "- Run time: driver %s%s\n", time.Since(b.started).Round(time.Second), total)
	if now, err := b.cpu(); err == nil {
		fmt.Fprintf(w, "- Other load on the machine during the run: %.2f CPUs on average (processes outside the benchmark)\n", otherLoad(b.cpuStart, now))
	}

	fmt.Fprintf(w, "\n## Targets\n\n")
	t := table{header: []string{"target", "limit", "measured", "result"}}
	for _, c := range b.checks() {
		verdict := "met"
		if !c.met {
			verdict = "**missed**"
		}
		t.add(c.target, c.limit, c.measured, verdict)
	}
	t.write(w)

	fmt.Fprintf(w, "\n## 1. Pass-through calls: containerd direct vs reference hop vs proxy\n\n")
	fmt.Fprintf(w, "Interleaved call by call, a fresh random order of the targets each round; latency is the client's.\n")
	fmt.Fprintf(w, "hop-b is a second, identical hop: hop-b/hop shows how far apart two identical forwarders measure.\n\n")
	t = table{header: []string{"call", "images", "n", "direct p50", "hop p50", "proxy p50", "direct p99", "hop p99", "proxy p99",
		"proxy/hop p50", "proxy/hop p99", "proxy/hop p99, 90 % CI", "hop-b/hop p50", "hop-b/hop p99"}}
	for _, r := range b.latency {
		d, h, p, hb := r.st["direct"], r.st["hop"], r.st["proxy"], r.st["hop-b"]
		t.add(r.call, fmt.Sprint(r.images), fmt.Sprint(p.n), us(d.p50), us(h.p50), us(p.p50), us(d.p99), us(h.p99), us(p.p99),
			x(ratio(p.p50, h.p50)), x(ratio(p.p99, h.p99)), ciRange(r.p99CI),
			x(ratio(hb.p50, h.p50)), x(ratio(hb.p99, h.p99)))
	}
	t.write(w)
	fmt.Fprintf(w, "\nCost per call of the same rows. CPU: user+system time of the forwarding process (/proc/PID/stat).\n")
	fmt.Fprintf(w, "Allocations and collections (GCs): the proxy process's heap allocations and completed garbage\n")
	fmt.Fprintf(w, "collections (Go runtime counters on its /metrics). Other load: CPUs kept busy by processes outside\n")
	fmt.Fprintf(w, "the benchmark during the row (/proc/stat minus the benchmark's).\n\n")
	t = table{header: []string{"call", "images", "hop/direct p50", "hop CPU/call", "proxy CPU/call", "proxy allocs/call", "proxy KiB/call", "proxy GCs per 1k calls", "other load"}}
	for _, r := range b.latency {
		t.add(r.call, fmt.Sprint(r.images), x(ratio(r.st["hop"].p50, r.st["direct"].p50)), us(r.hopCPU), us(r.proxyCPU),
			fmt.Sprintf("%.0f", r.allocs), fmt.Sprintf("%.1f", r.bytes/1024), fmt.Sprintf("%.1f", r.gcs), fmt.Sprintf("%.2f CPUs", r.other))
	}
	t.write(w)

	if b.cfg.hopProcs > 0 {
		fmt.Fprintf(w, "\n### Against a hop on the proxy's threads (hop-n: GOMAXPROCS=%d, -hop-procs)\n\n", b.cfg.hopProcs)
		fmt.Fprintf(w, "The proxy runs on --procs threads (1 by default); hop and hop-b on the Go runtime's default. hop-n is\n")
		fmt.Fprintf(w, "the same hop on the proxy's number: hop-n/hop is what that setting alone is worth to a forwarder,\n")
		fmt.Fprintf(w, "and proxy/hop-n the proxy's own cost over a forwarder run as it is.\n\n")
		t = table{header: []string{"call", "images", "hop p50", "hop-n p50", "proxy p50", "hop-n/hop p50", "proxy/hop-n p50", "proxy/hop-n p99"}}
		for _, r := range b.latency {
			h, n, p := r.st["hop"], r.st[hopNName], r.st["proxy"]
			t.add(r.call, fmt.Sprint(r.images), us(h.p50), us(n.p50), us(p.p50),
				x(ratio(n.p50, h.p50)), x(ratio(p.p50, n.p50)), x(ratio(p.p99, n.p99)))
		}
		t.write(w)
	}

	if b.cmp != nil {
		fmt.Fprintf(w, "\n### Side by side with a second build (proxy-b, -compare)\n\n")
		t = table{header: []string{"call", "images", "proxy p50", "proxy-b p50", "proxy/hop p50", "proxy-b/hop p50",
			"proxy/hop p99", "proxy-b/hop p99", "proxy CPU/call", "proxy-b CPU/call", "proxy allocs/call", "proxy-b allocs/call"}}
		for _, r := range b.latency {
			h, p, c := r.st["hop"], r.st["proxy"], r.st["proxy-b"]
			t.add(r.call, fmt.Sprint(r.images), us(p.p50), us(c.p50), x(ratio(p.p50, h.p50)), x(ratio(c.p50, h.p50)),
				x(ratio(p.p99, h.p99)), x(ratio(c.p99, h.p99)), us(r.proxyCPU), us(r.cmpCPU),
				fmt.Sprintf("%.0f", r.allocs), fmt.Sprintf("%.0f", r.cmpAllocs))
		}
		t.write(w)
	}

	if len(b.pulls.proxy) > 0 {
		fmt.Fprintf(w, "\n## 2. Mirror pull (2 × 4 MiB layers, from scratch each time)\n\n")
		fmt.Fprintf(w, "`%s` through the proxy vs containerd pulling `%s` itself; taking turns.\n", pullImage, b.cfg.mirrorRef(pullImage))
		fmt.Fprintf(w, "The proxy runs with its defaults: the mirror served the warm-up pull, so each pull starts at once and is\n"+
			"probed alongside only if it is still running after 250 ms (the probes column says how many were).\n")
		if len(b.pulls.first) > 0 {
			fmt.Fprintf(w, "probe first: a second proxy with `--probe-overlap=0`, which probes before every pull, as the\n"+
				"default does at start, after a miss or a failure, and after `--probe-overlap` without a hit.\n")
		}
		fmt.Fprintln(w)
		t = table{header: []string{"n", "direct p50", "proxy p50", "proxy/direct p50", "proxy/direct paired", "direct min", "proxy min", "proxy − direct p50",
			"runtime's own pull p50: direct / proxy (its log)", "proxy − direct outside the runtime's pull, paired",
			"proxy's own time per pull (metrics)", "proxy's probes: before / alongside"}}
		t.header = append(t.header, "hop p50", "hop/direct paired", "hop − direct outside the runtime's pull, paired")
		if len(b.pulls.first) > 0 {
			t.header = append(t.header, "probe first p50", "probe first/direct p50", "probe first/direct paired")
		}
		dd, pp := summarize(b.pulls.direct), summarize(b.pulls.proxy)
		t.add(fmt.Sprint(pp.n), ms(dd.p50), ms(pp.p50), x(ratio(pp.p50, dd.p50)), x(paired(b.pulls.proxy, b.pulls.direct)),
			ms(minD(b.pulls.direct)), ms(minD(b.pulls.proxy)), ms(pp.p50-dd.p50),
			ms(median(b.pulls.directRT))+" / "+ms(median(b.pulls.proxyRT)), outsideText(b.pulls.proxy, b.pulls.proxyRT, b.pulls.direct, b.pulls.directRT), ms(b.pulls.own),
			fmt.Sprintf("%.0f / %.0f", b.pulls.probesBefore, b.pulls.probesAlongside))
		row := &t.rows[len(t.rows)-1]
		*row = append(*row, ms(median(b.pulls.hop)), x(paired(b.pulls.hop, b.pulls.direct)), outsideText(b.pulls.hop, b.pulls.hopRT, b.pulls.direct, b.pulls.directRT))
		if len(b.pulls.first) > 0 {
			ff := summarize(b.pulls.first)
			*row = append(*row, ms(ff.p50), x(ratio(ff.p50, dd.p50)), x(paired(b.pulls.first, b.pulls.direct)))
		}
		t.write(w)
	}

	if len(b.pulls.tagOn) > 0 {
		fmt.Fprintf(w, "\n## 2b. Mirror pull with the tag check on vs off (same image, same run)\n\n")
		fmt.Fprintf(w, "`%s` (source: the registry itself, mirror: `%s`, the same image) through the proxy, which has no\n"+
			"tag-check policy for it, and through a second proxy with `--tag-check %s=source-required`, which HEADs the source\n"+
			"alongside the mirror and pulls the mirror by the source's digest; taking turns with section 2's pulls.\n\n",
			b.cfg.tagCheckRef(), b.cfg.tagCheckMirrorRef(), b.cfg.tagCheckSource())
		fmt.Fprintf(w, "Once per round after the pulls, over kept connections and with nothing else: HEADs to the source and the mirror\n"+
			"sent at once, the check's one round trip at its floor (both are this registry), as the check finds the registry:\n"+
			"after a pull; then one HEAD of the tag at the source; then the two at once again, right after it (warm).\n\n")
		t = table{header: []string{"n", "check off p50", "check on p50", "on/off p50", "on/off paired", "on − off p50", "on − off paired",
			"on − off outside the runtime's pull, paired", "runtime's own pull p50: off / on (its log)", "proxy's own time per pull, on / off (metrics, mean)", "waiting for the check (metrics, mean)", "one HEAD mean", "source + mirror HEADs at once mean", "the same, warm, mean", "tag checks (metrics)"}}
		off, on := summarize(b.pulls.tagOff), summarize(b.pulls.tagOn)
		t.add(fmt.Sprint(on.n), ms(off.p50), ms(on.p50), x(ratio(on.p50, off.p50)), x(paired(b.pulls.tagOn, b.pulls.tagOff)),
			ms(on.p50-off.p50), ms(pairedDiff(b.pulls.tagOn, b.pulls.tagOff)), outsideText(b.pulls.tagOn, b.pulls.tagOnRT, b.pulls.tagOff, b.pulls.tagOffRT),
			ms(median(b.pulls.tagOffRT))+" / "+ms(median(b.pulls.tagOnRT)), ms(b.pulls.tagOwn)+" / "+ms(b.pulls.own), ms(b.pulls.tagWait), ms(mean(b.pulls.tagHead)), ms(mean(b.pulls.tagHeads)), ms(mean(b.pulls.tagHeadsWarm)),
			describeTagChecks(b.pulls.tagChecks))
		t.write(w)
	}

	if len(b.dedup.burst) > 0 {
		d := b.dedup
		fmt.Fprintf(w, "\n## 3. %d concurrent identical pulls (2 × 2 MiB layers) through the proxy\n\n", d.concurrency)
		t = table{header: []string{"rounds", "one pull p50", fmt.Sprintf("%d at once, wall p50", d.concurrency), "ratio",
			"runtime pulls (proxy metrics)", "runtime pulls (containerd log)", "failed callers"}}
		t.add(fmt.Sprint(len(d.burst)), ms(median(d.single)), ms(median(d.burst)), x(ratio(median(d.burst), median(d.single))),
			fmt.Sprint(d.runtimePulls), fmt.Sprint(d.logPulls), fmt.Sprint(d.failed))
		t.write(w)
	}

	if base := b.fallbackRow("baseline"); base != nil {
		fmt.Fprintf(w, "\n## 4. Fallback past a faulty first mirror (probe on, default settings)\n\n")
		fmt.Fprintf(w, "%d repetitions, each with fresh mirrors (closed breakers); per case and repetition 11 distinct small\n", b.cfg.fallbackReps)
		fmt.Fprintf(w, "images, the cases interleaved pull by pull. Added = case − baseline outside the runtime's own successful pull\n")
		fmt.Fprintf(w, "(containerd's log; a failed runtime attempt counts as added) (first pull: median of the per-repetition\n")
		fmt.Fprintf(w, "differences; next 10: difference of the medians).\n\n")
		t = table{header: []string{"case", "first pull p50", "added", "next 10 p50", "added", "faulty mirrors' attempts (metrics)"}}
		for _, r := range b.fallback {
			add1, addN := "-", "-"
			if r.c.name != "baseline" {
				add1, addN = ms(r.addedFirst(base)), ms(r.addedNext(base))
			}
			t.add(r.c.name+": "+r.c.what, ms(r.first()), add1, ms(r.next()), addN, describeAttempts(r.faulty))
		}
		t.write(w)
	}

	fmt.Fprintf(w, "\n## 5. Memory (/proc/PID/status)\n\n")
	t = table{header: []string{"state", "proxy VmRSS", "proxy VmHWM", "proxy Go heap in use", "proxy goroutines", "hop VmRSS", "hop VmHWM", "note"}}
	for _, m := range b.memory {
		t.add(m.state, mib(m.rss), mib(m.hwm), mib(int64(m.heap/1024)), fmt.Sprint(m.goroutines), mib(m.hopRSS), mib(m.hopHWM), m.note)
	}
	t.write(w)

	fmt.Fprintf(w, "\n## Setup steps\n\n")
	t = table{header: []string{"step", "took"}}
	for _, s := range b.setup {
		t.add(s.what, s.took.Round(time.Millisecond).String())
	}
	t.write(w)

	fmt.Fprintf(w, "\n## Method\n\n%s", method)
	for _, n := range b.notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
}

const method = `- **Reference hop**: a gRPC server in its own process (the driver binary run with -hop) that
  relays each unary call's bytes to containerd without decoding them (a pass-through codec that
  keeps gRPC's receive buffers and hands them back for sending, and grpc.UnknownServiceHandler).
  It is the cost of one more process in the path and nothing else, so proxy/hop is the proxy's
  own cost. It runs as a separate process in a session of its own, as the proxy does: inside
  the driver, or in the driver's scheduling group (kernel autogroup), it would look cheaper than
  any proxy can be. A second identical hop (hop-b) is measured too; hop-b/hop is the error of
  the method itself (about ±3% on p50 on a quiet 2-CPU machine). hop and hop-b run on the Go
  runtime's default number of threads (GOMAXPROCS: one per CPU); the proxy on its --procs (1 by
  default). A third hop, hop-n, runs on -hop-procs threads (1 by default) and is measured in the
  pass-through phase too: proxy/hop-n compares the proxy with a forwarder run as it is.
- **Interleaving**: every round calls each target once in a fresh random order, so drift
  (CPU frequency, caches, containerd's GC) lands on all targets alike. Warm-up rounds (5%) are
  not recorded. Each call carries a 30s deadline, as kubelet's do.
- **p99**: 20,000 ImageStatus rounds (10,000 for ListImages of 10 images) put 200 samples in the
  slowest 1 %; at 3,000 the p99s of two identical processes differed by up to 43 %. The 90 %
  interval beside proxy/hop p99 is a bootstrap over rounds (200 resamples of the rounds, the same
  ones for proxy and hop): how far the ratio could move on another run of the same length. Runs
  differ by more than that: runs of one build at 20,000 rounds gave proxy/hop p99 of
  0.87–1.19× on one machine and 0.89–1.04× on another (README, "How far p99 moves"). A p99 near its limit needs several runs to judge; the verdict is on the ratio measured.
- **Collections**: go_gc_duration_seconds_count of the proxy, per 1,000 calls of the row.
- **Allocations**: go_memstats_mallocs_total and go_memstats_alloc_bytes_total of the proxy
  process, read from its /metrics before and after a row, minus what a scrape alone allocates,
  divided by the proxy calls of the row (warm-up included). This is the real binary with its
  interceptors and its runtime client; it is exact to within the runtime's per-P cache, i.e.
  a few percent.
- **Images**: the numbered set is one shared 64-byte layer and a distinct config per image
  (distinct image ids), in 100 repositories. Image 0 was pulled by containerd itself (no alias:
  the pure pass-through case); every other one through the proxy (an alias each).
- **Pulls** start from scratch: the image is removed first, which in containerd's CRI plugin
  deletes its content synchronously, so every pull downloads and unpacks all layers.
- **Added time of a pull** (mirror pull, tag check, fallback) is judged outside the runtime's own
  pull of the image: containerd's CRI plugin logs each PullImage request and its answer, and the
  driver subtracts the span between the two lines of the successful pull from the caller's time,
  pull by pull. A failed runtime attempt (a black hole's, abandoned) stays in as added time. The
  runtime's pull varies from one to the next by more than the 2 % the mirror pull may add (a bare
  hop measured 0.996–1.030× of direct by whole pulls in five runs of 80–200 rounds); the added time outside it
  does not. Whole-pull ratios, and the runtime's own p50 for each target (which would show a
  runtime slowed by the proxy; the proxy runs nothing beside a pull that short: a probe alongside
  waits 250 ms, the progress watch 1 s), are in the tables.
- **Black-holed first mirror**: a mirror that accepts connections and never answers is, by
  design, slow rather than dead (README, "Slow is not dead"): the probe gives up after
  --probe-timeout and leaves the pull to the runtime, and the stall window (--stall-timeout)
  abandons it once nothing was downloaded for the whole window, judged on progress sampled once
  a second. The first pull's target is that bound (probe timeout + stall window + 1 s); an
  earlier target of the probe timeout alone predates the design, which misses it on purpose.
  The pulls after it find the mirror held back and should cost ~0.
- **Memory**: VmRSS 1 s after the state named. "After ListImages" is the proxy after the
  ListImages rows of the large set, holding what a node keeps after kubelet's listings. The
  20,000-alias rows are a proxy of its own (the same binary and rules, in front of the same
  containerd) whose alias table was written before it started: that many original names spread
  over the large set's images, as many pulls through the proxy would have recorded.
`

// table renders a Markdown table with aligned columns: readable on a
// terminal and in a rendered file.
type table struct {
	header []string
	rows   [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) {
	width := make([]int, len(t.header))
	for _, r := range append([][]string{t.header}, t.rows...) {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range cells {
			b.WriteString(" " + c + strings.Repeat(" ", width[i]-len([]rune(c))) + " |")
		}
		fmt.Fprintln(w, b.String())
	}
	line(t.header)
	sep := make([]string, len(width))
	for i, n := range width {
		sep[i] = strings.Repeat("-", n)
	}
	line(sep)
	for _, r := range t.rows {
		line(r)
	}
}

// ratio is a/b for the tables, 0 when b is 0; verdicts use ratioOf.
func ratio(a, b time.Duration) float64 {
	r, _ := ratioOf(a, b)
	return r
}

// ratioOf is a/b, and whether both were measured (non-zero).
func ratioOf(a, b time.Duration) (float64, bool) {
	if a <= 0 || b <= 0 {
		return 0, false
	}
	return float64(a) / float64(b), true
}

func x(r float64) string { return fmt.Sprintf("%.2f×", r) }

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func minD(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	m := d[0]
	for _, v := range d[1:] {
		m = min(m, v)
	}
	return m
}

// describeTagChecks renders the tag check verdicts counted, by result.
func describeTagChecks(m map[string]float64) string {
	var parts []string
	for _, res := range []string{"match", "platform_match", "stale", "source_unreachable"} {
		if m[res] > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f", res, m[res]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
