package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/promtest"
)

// Images of the pull phases: a few megabytes of incompressible layers, so a
// pull moves real data and is not just the cost of a few round trips.
const (
	pullImage   = benchPrefix + "/pull:1"  // 2 × 4 MiB
	dedupImage  = benchPrefix + "/dedup:1" // 2 × 2 MiB
	pullTimeout = 2 * time.Minute
)

type pullResult struct {
	direct, proxy []time.Duration
	// hop: containerd pulling the mirror reference through the reference
	// hop, the floor for any forwarder.
	hop []time.Duration
	// first: through the proxy that always probes before the runtime pull
	// (-probe-first): the cost of a pull from a mirror whose last answer
	// was not a recent hit.
	first []time.Duration
	// tagOff and tagOn: the tag check case (tagCheckRef), through the proxy
	// (no policy for it: the mirror's answer is pulled as is) and through
	// the proxy with the policy (-tag-check-proxy: a HEAD to the source
	// alongside the HEAD to the mirror, then mirror@digest).
	tagOff, tagOn []time.Duration
	// ...RT: the part of each pull above that the runtime spent pulling
	// the image, from its log (runtimeLog), round by round: the added time
	// of the proxy, and of the tag check, is judged outside it.
	directRT, proxyRT, hopRT, tagOffRT, tagOnRT []time.Duration
	// tagHead and tagHeads, once per round over kept connections
	// (bareHeads): one HEAD of the tag at the source, and HEADs to the
	// source and the mirror sent at once (the check's round trip, bare).
	// tagHeadsWarm is the HEADs at once again, right after the one HEAD:
	// a registry that has just answered the same tag answers faster than
	// the check finds it, after a pull.
	tagHead, tagHeads, tagHeadsWarm []time.Duration
	// tagOwn is own (below) for the proxy with the tag check: its own time
	// per pull less the proxy's without the check is what the check costs,
	// free of the runtime's pull time and its noise.
	tagOwn time.Duration
	// tagWait is the part of tagOwn spent waiting for the check: the mean
	// of cri_mirror_tag_check_duration_seconds over the measured pulls.
	tagWait time.Duration
	// tagChecks counts the proxy-tag-check's verdicts by result during the
	// measured pulls (its metrics).
	tagChecks map[string]float64
	// own is the proxy's mean time per pull outside the runtime's pull
	// (resolve, probe, alias write): its PullImage handling time minus its
	// runtime attempt time, from its own metrics.
	own time.Duration
	// probes the proxy sent during the measured pulls, by mode (its metrics).
	probesBefore, probesAlongside float64
}

type dedupResult struct {
	concurrency  int
	single       []time.Duration // one pull through the proxy
	burst        []time.Duration // wall time of N identical pulls at once
	runtimePulls []float64       // per burst, from the proxy's metrics
	logPulls     []int           // per burst, from containerd's log (-1: no log)
	failed       int             // callers of a burst that got an error or another image
}

// absent removes ref from containerd if it is there, so the next pull of it
// downloads and unpacks everything (containerd's CRI RemoveImage deletes the
// content synchronously once no name refers to it).
func (b *bench) absent(ctx context.Context, mirrorRef string) error {
	ok, err := b.direct.present(ctx, mirrorRef)
	if err != nil || !ok {
		return err
	}
	return b.direct.remove(ctx, mirrorRef)
}

// timedPull pulls ref through t from scratch, removes it again, and returns
// how long the pull took and how much of it the runtime spent pulling (its
// log). Through the proxy it is removed through the proxy, which drops the
// alias too.
func (b *bench) timedPull(ctx context.Context, t *target, ref string) (took, runtime time.Duration, err error) {
	mirror := ref
	if !strings.HasPrefix(ref, b.cfg.registry+"/") { // a source name: the proxy pulls it from the mirror
		mirror = b.cfg.mirrorRef(ref)
	}
	if err := b.absent(ctx, mirror); err != nil {
		return 0, 0, err
	}
	if err := b.runtime.skip(); err != nil {
		return 0, 0, err
	}
	pctx, cancel := context.WithTimeout(ctx, pullTimeout)
	defer cancel()
	start := time.Now()
	if _, err := t.pull(pctx, ref); err != nil {
		return 0, 0, err
	}
	took = time.Since(start)
	runtime, n, err := b.runtime.pulled()
	if err == nil && n != 1 {
		err = fmt.Errorf("containerd logged %d successful pulls during one pull of %s through %s, want 1", n, ref, t.name)
	}
	if err != nil {
		return 0, 0, err
	}
	return took, runtime, t.remove(ctx, ref)
}

// outside is took less runtime, round by round: the time of each pull
// outside the runtime's own pull of the image. ok is false when the two do
// not pair up.
func outside(took, runtime []time.Duration) (d []time.Duration, ok bool) {
	if len(took) == 0 || len(took) != len(runtime) {
		return nil, false
	}
	d = make([]time.Duration, len(took))
	for i := range took {
		d[i] = took[i] - runtime[i]
	}
	return d, true
}

// mirrorPulls compares a tag pull through the proxy (resolve, probe,
// runtime pull of the mirror reference, alias) with containerd pulling the
// mirror reference itself, with containerd pulling it through the reference
// hop, and (-probe-first) with a proxy that probes before every pull; each
// round in a fresh random order (see interleave).
func (b *bench) mirrorPulls(ctx context.Context) error {
	n := b.cfg.pullRounds
	mirror := b.cfg.mirrorRef(pullImage)
	type pullTarget struct {
		t       *target
		ref     string
		out, rt *[]time.Duration
	}
	p := &b.pulls
	var firstRT []time.Duration // not judged
	targets := []pullTarget{{b.direct, mirror, &p.direct, &p.directRT}, {b.hop, mirror, &p.hop, &p.hopRT}, {b.proxy, pullImage, &p.proxy, &p.proxyRT}}
	if b.first != nil {
		targets = append(targets, pullTarget{b.first, pullImage, &p.first, &firstRT})
	}
	if b.tagOn != nil {
		targets = append(targets, pullTarget{b.proxy, b.cfg.tagCheckRef(), &p.tagOff, &p.tagOffRT}, pullTarget{b.tagOn, b.cfg.tagCheckRef(), &p.tagOn, &p.tagOnRT})
	}
	logf("mirror pull of %s: %d rounds, %d targets taking turns", pullImage, n, len(targets))
	heads := newBareHeads(b.cfg.registry, b.cfg.tagCheckRef(), b.cfg.tagCheckMirrorRef())
	defer heads.close()
	var before, tagBefore promtest.Set
	rng := rand.New(rand.NewPCG(2, uint64(len(targets))))
	for r := -1; r < n; r++ { // round -1 warms the registry's and the kernel's caches
		for _, i := range rng.Perm(len(targets)) {
			t := targets[i]
			d, rt, err := b.timedPull(ctx, t.t, t.ref)
			if err != nil {
				return err
			}
			if r >= 0 {
				*t.out, *t.rt = append(*t.out, d), append(*t.rt, rt)
			}
		}
		if b.tagOn != nil {
			pair, one, warm, err := heads.time(ctx)
			if err != nil {
				return err
			}
			if r >= 0 {
				b.pulls.tagHead, b.pulls.tagHeads = append(b.pulls.tagHead, one), append(b.pulls.tagHeads, pair)
				b.pulls.tagHeadsWarm = append(b.pulls.tagHeadsWarm, warm)
			}
		}
		if r == -1 {
			var err error
			if before, err = promtest.Scrape(ctx, b.cfg.metricsAddr); err != nil {
				return err
			}
			if b.tagOn != nil {
				if tagBefore, err = promtest.Scrape(ctx, b.cfg.tagCheckMetrics); err != nil {
					return err
				}
			}
		}
	}
	after, err := promtest.Scrape(ctx, b.cfg.metricsAddr)
	if err != nil {
		return err
	}
	b.pulls.own = ownPullTime(before, after)
	probes := func(mode string) float64 {
		m := func(l map[string]string) bool { return l["mode"] == mode }
		return after.SumFunc("cri_mirror_probes_total", m) - before.SumFunc("cri_mirror_probes_total", m)
	}
	b.pulls.probesBefore, b.pulls.probesAlongside = probes("before"), probes("alongside")
	logf("  p50 direct %s proxy %s (%.3f×, paired %.3f×); outside the runtime's own pull (p50 direct %s proxy %s) the proxy adds %s; proxy's own time per pull %s",
		ms(median(p.direct)), ms(median(p.proxy)), ratio(median(p.proxy), median(p.direct)), paired(p.proxy, p.direct),
		ms(median(p.directRT)), ms(median(p.proxyRT)), outsideText(p.proxy, p.proxyRT, p.direct, p.directRT), ms(p.own))
	logf("  p50 hop %s (paired %.3f×); outside the runtime's pull the hop adds %s", ms(median(p.hop)), paired(p.hop, p.direct), outsideText(p.hop, p.hopRT, p.direct, p.directRT))
	if len(b.pulls.first) > 0 {
		logf("  p50 probe-first proxy %s (%.3f×)", ms(median(b.pulls.first)), ratio(median(b.pulls.first), median(b.pulls.direct)))
	}
	if b.tagOn != nil {
		tagAfter, err := promtest.Scrape(ctx, b.cfg.tagCheckMetrics)
		if err != nil {
			return err
		}
		b.pulls.tagOwn = ownPullTime(tagBefore, tagAfter)
		if n := tagAfter.Sum("cri_mirror_tag_check_duration_seconds_count", nil) - tagBefore.Sum("cri_mirror_tag_check_duration_seconds_count", nil); n > 0 {
			sum := tagAfter.Sum("cri_mirror_tag_check_duration_seconds_sum", nil) - tagBefore.Sum("cri_mirror_tag_check_duration_seconds_sum", nil)
			b.pulls.tagWait = time.Duration(sum / n * float64(time.Second))
		}
		b.pulls.tagChecks = map[string]float64{}
		for _, res := range []string{"match", "platform_match", "stale", "source_unreachable"} {
			m := map[string]string{"result": res}
			b.pulls.tagChecks[res] = tagAfter.Sum("cri_mirror_tag_checks_total", m) - tagBefore.Sum("cri_mirror_tag_checks_total", m)
		}
		logf("  tag check: p50 off %s on %s (paired on/off %.3f×, on − off %s, outside the runtime's pull %s); proxy's own time per pull on %s off %s, waiting for the check %s (means); one HEAD %s, source and mirror HEADs at once %s (right after another HEAD %s) (means); checks %v",
			ms(median(b.pulls.tagOff)), ms(median(b.pulls.tagOn)), paired(b.pulls.tagOn, b.pulls.tagOff), ms(pairedDiff(b.pulls.tagOn, b.pulls.tagOff)),
			outsideText(b.pulls.tagOn, b.pulls.tagOnRT, b.pulls.tagOff, b.pulls.tagOffRT),
			ms(b.pulls.tagOwn), ms(b.pulls.own), ms(b.pulls.tagWait), ms(mean(b.pulls.tagHead)), ms(mean(b.pulls.tagHeads)), ms(mean(b.pulls.tagHeadsWarm)), b.pulls.tagChecks)
	}
	return nil
}

// pairedRatio is the median over rounds of a[i]/b[i]: each round's two pulls
// ran back to back, so a slow spell of the machine falls on both and cancels.
// It is measured only when both series have the same, non-zero number of
// rounds and every round has both times.
func pairedRatio(a, b []time.Duration) (float64, bool) {
	if len(a) == 0 || len(a) != len(b) {
		return 0, false
	}
	r := make([]float64, 0, len(a))
	for i := range a {
		x, ok := ratioOf(a[i], b[i])
		if !ok {
			return 0, false
		}
		r = append(r, x)
	}
	return medianF(r), true
}

// pairedDiff is the median over rounds of a[i]-b[i] (0 when the series do
// not pair up): what a pays more than b, with slow spells cancelled as in
// pairedRatio.
func pairedDiff(a, b []time.Duration) time.Duration {
	if len(a) == 0 || len(a) != len(b) {
		return 0
	}
	d := make([]time.Duration, len(a))
	for i := range a {
		d[i] = a[i] - b[i]
	}
	return median(d)
}

// paired is pairedRatio for the tables (0 when not measured).
func paired(a, b []time.Duration) float64 {
	r, _ := pairedRatio(a, b)
	return r
}

// ownPullTime is the mean PullImage handling time minus the mean runtime
// attempt time between two scrapes in which only successful single-attempt
// pulls ran.
func ownPullTime(before, after promtest.Set) time.Duration {
	pull := func(l map[string]string) bool { return l["grpc_method"] == "PullImage" }
	ok := func(l map[string]string) bool { return l["result"] == "success" }
	delta := func(name string, keep func(map[string]string) bool) float64 {
		return after.SumFunc(name, keep) - before.SumFunc(name, keep)
	}
	n := delta("grpc_server_handling_seconds_count", pull)
	if n == 0 {
		return 0
	}
	handling := delta("grpc_server_handling_seconds_sum", pull)
	attempts := delta("cri_mirror_pull_attempt_duration_seconds_sum", ok)
	return time.Duration((handling - attempts) / n * float64(time.Second))
}

// dedupPulls compares one pull through the proxy with N identical pulls
// started at once, and counts how many pulls reached containerd.
func (b *bench) dedupPulls(ctx context.Context) error {
	d := &b.dedup
	d.concurrency = b.cfg.concurrency
	logf("%d concurrent pulls of %s vs one: %d rounds", d.concurrency, dedupImage, b.cfg.dedupRounds)
	if _, _, err := b.timedPull(ctx, b.proxy, dedupImage); err != nil { // warm-up
		return err
	}
	for r := range b.cfg.dedupRounds {
		single := func() error {
			t, _, err := b.timedPull(ctx, b.proxy, dedupImage)
			d.single = append(d.single, t)
			return err
		}
		fns := []func() error{single, func() error { return b.burst(ctx) }}
		if r%2 == 1 {
			fns[0], fns[1] = fns[1], fns[0]
		}
		for _, fn := range fns {
			if err := fn(); err != nil {
				return err
			}
		}
	}
	logf("  one pull p50 %s, %d at once p50 %s; runtime pulls per burst %v (log %v), failed callers %d",
		ms(median(d.single)), d.concurrency, ms(median(d.burst)), d.runtimePulls, d.logPulls, d.failed)
	return nil
}

// burst starts N identical pulls at the same instant and waits for all.
func (b *bench) burst(ctx context.Context) error {
	d := &b.dedup
	mirror := b.cfg.mirrorRef(dedupImage)
	if err := b.absent(ctx, mirror); err != nil {
		return err
	}
	before, err := promtest.Scrape(ctx, b.cfg.metricsAddr)
	if err != nil {
		return err
	}
	logBefore := b.countLogPulls(mirror)

	pctx, cancel := context.WithTimeout(ctx, pullTimeout)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		ids   = map[string]int{}
		fails int
		gate  = make(chan struct{})
	)
	for range d.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			id, err := b.proxy.pull(pctx, dedupImage)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fails++
				return
			}
			ids[id]++
		}()
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	wall := time.Since(start)

	after, err := promtest.Scrape(ctx, b.cfg.metricsAddr)
	if err != nil {
		return err
	}
	d.burst = append(d.burst, wall)
	d.runtimePulls = append(d.runtimePulls, runtimePulls(after)-runtimePulls(before))
	if logBefore >= 0 {
		d.logPulls = append(d.logPulls, b.countLogPulls(mirror)-logBefore)
	} else {
		d.logPulls = append(d.logPulls, -1)
	}
	if len(ids) > 1 {
		fails += d.concurrency - fails - ids[mostCommon(ids)]
	}
	d.failed += fails
	return b.proxy.remove(ctx, dedupImage)
}

func mostCommon(m map[string]int) string {
	best, n := "", -1
	for k, v := range m {
		if v > n {
			best, n = k, v
		}
	}
	return best
}

// countLogPulls counts the PullImage requests for ref that containerd's CRI
// plugin logged (one line per request it received), or -1 when the log
// cannot be read, which fails the dedup verdict. It is the runtime's own
// testimony, independent of the proxy's metrics.
func (b *bench) countLogPulls(ref string) int {
	if b.cfg.containerdLog == "" {
		return -1
	}
	data, err := os.ReadFile(b.cfg.containerdLog)
	if err != nil {
		return -1
	}
	return pullRequests(string(data), ref)
}
