package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/promtest"
)

// fallbackPulls is how many pulls follow the first one in each case: all
// of them inside the breaker's 30s cool-down.
const fallbackPulls = 10

func fallbackRef(r fallbackRule, k int) string { return fmt.Sprintf("%s/img:t%d", r.prefix(), k) }

// fallbackRow is one case over all repetitions.
type fallbackRow struct {
	c fallbackCase
	// pulls[rep][k]: pull 0 is the first, 1..fallbackPulls the next.
	pulls [][]time.Duration
	// rt[rep][k]: the part of pulls[rep][k] the runtime spent on its
	// successful pull of the image (runtimeLog). A failed runtime attempt
	// (a black hole's, abandoned) is not in it: that is time the proxy
	// added.
	rt [][]time.Duration
	// What the proxy recorded for the faulty mirrors between the phase's
	// two scrapes: attempts by result (e.g. unreachable 3, skipped 30).
	// nil for the baseline, which has no faulty mirror.
	faulty map[string]float64
}

// first is the median first pull over the repetitions.
func (r fallbackRow) first() time.Duration {
	var d []time.Duration
	for _, p := range r.pulls {
		d = append(d, p[0])
	}
	return median(d)
}

// next is the median of every pull after the first.
func (r fallbackRow) next() time.Duration {
	var d []time.Duration
	for _, p := range r.pulls {
		d = append(d, p[1:]...)
	}
	return median(d)
}

// out is pull k of repetition rep outside the runtime's own pull of the
// image: the time a case adds shows there, without the runtime's
// pull-to-pull noise.
func (r fallbackRow) out(rep, k int) time.Duration { return r.pulls[rep][k] - r.rt[rep][k] }

// addedFirst is the median, over the repetitions, of the first pull minus
// the baseline's first pull of the same repetition (pulled right beside
// it), both outside the runtime's own pull.
func (r fallbackRow) addedFirst(base *fallbackRow) time.Duration {
	var d []time.Duration
	for i := range r.pulls {
		d = append(d, r.out(i, 0)-base.out(i, 0))
	}
	return median(d)
}

// addedNext is the median of every pull after the first less the
// baseline's, outside the runtime's own pull.
func (r fallbackRow) addedNext(base *fallbackRow) time.Duration {
	next := func(r *fallbackRow) time.Duration {
		var d []time.Duration
		for i, p := range r.pulls {
			for k := 1; k < len(p); k++ {
				d = append(d, r.out(i, k))
			}
		}
		return median(d)
	}
	return next(&r) - next(base)
}

// blackhole accepts connections and never answers: a mirror whose host is
// up but whose registry hangs. Connections stay open until close.
type blackhole struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	done  chan struct{}
}

func startBlackhole(port int) (*blackhole, error) {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, fmt.Errorf("black-hole listener: %w", err)
	}
	h := &blackhole{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
		}
	}()
	return h, nil
}

func (h *blackhole) close() {
	_ = h.ln.Close()
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		_ = c.Close()
	}
}

// fallbacks pulls 1 + fallbackPulls distinct images per case and
// repetition through the proxy, the cases interleaved pull by pull in a
// random order. Distinct images (each with its own layer) so that no pull
// is served from containerd's content store.
func (b *bench) fallbacks(ctx context.Context) error {
	bh, err := startBlackhole(b.cfg.blackholePort)
	if err != nil {
		return err
	}
	defer bh.close()
	before, err := promtest.Scrape(ctx, b.cfg.metricsAddr)
	if err != nil {
		return err
	}
	reps := b.cfg.fallbackReps
	logf("fallback: %d cases × %d repetitions × %d pulls, interleaved", len(fallbackCases), reps, fallbackPulls+1)
	rows := make([]fallbackRow, len(fallbackCases))
	for i, c := range fallbackCases {
		rows[i] = fallbackRow{c: c, pulls: make([][]time.Duration, reps), rt: make([][]time.Duration, reps)}
	}
	rng := rand.New(rand.NewPCG(4, 2))
	for rep := range reps {
		start := time.Now()
		for k := range fallbackPulls + 1 {
			for _, i := range rng.Perm(len(fallbackCases)) {
				r := fallbackRule{c: fallbackCases[i], rep: rep}
				if err := b.runtime.skip(); err != nil {
					return err
				}
				pctx, cancel := context.WithTimeout(ctx, pullTimeout)
				t0 := time.Now()
				_, err := b.proxy.pull(pctx, fallbackRef(r, k))
				d := time.Since(t0)
				cancel()
				if err != nil {
					return fmt.Errorf("fallback %s: %w", r.repo(), err)
				}
				rt, n, err := b.runtime.pulled()
				if err == nil && n != 1 {
					err = fmt.Errorf("containerd logged %d successful pulls during one pull of %s, want 1", n, fallbackRef(r, k))
				}
				if err != nil {
					return err
				}
				rows[i].pulls[rep], rows[i].rt[rep] = append(rows[i].pulls[rep], d), append(rows[i].rt[rep], rt)
			}
		}
		if took := time.Since(start); took > 25*time.Second {
			b.notes = append(b.notes, fmt.Sprintf("Fallback repetition %d took %s, close to or past the 30s cool-down: later pulls may have re-tried the faulty mirrors.",
				rep, took.Round(time.Millisecond)))
		}
	}
	after, err := promtest.Scrape(ctx, b.cfg.metricsAddr)
	if err != nil {
		return err
	}
	for i := range rows {
		var mirrors []string
		for rep := range reps {
			if m := (fallbackRule{c: rows[i].c, rep: rep}).firstMirror(b.cfg); m != "" {
				mirrors = append(mirrors, m)
			}
		}
		rows[i].faulty = attemptDelta(before, after, mirrors)
	}
	b.fallback = rows
	base := &rows[0]
	for _, r := range rows {
		logf("  %-9s first %s (added %s), next p50 %s (added %s); faulty mirror: %s", r.c.name,
			ms(r.first()), ms(r.addedFirst(base)), ms(r.next()), ms(r.addedNext(base)), describeAttempts(r.faulty))
	}
	// Leave containerd with the numbered set only.
	for _, r := range fallbackRules(reps) {
		for k := range fallbackPulls + 1 {
			if err := b.proxy.remove(ctx, fallbackRef(r, k)); err != nil {
				return err
			}
		}
	}
	return nil
}

// attemptDelta counts cri_mirror_pull_attempts_total of the given mirrors
// by result between two scrapes (nil without mirrors).
func attemptDelta(before, after promtest.Set, mirrors []string) map[string]float64 {
	if len(mirrors) == 0 {
		return nil
	}
	results := map[string]float64{}
	for _, s := range after {
		if s.Name == "cri_mirror_pull_attempts_total" && slices.Contains(mirrors, s.Labels["mirror"]) {
			results[s.Labels["result"]] += s.Value
		}
	}
	for _, s := range before {
		if s.Name == "cri_mirror_pull_attempts_total" && slices.Contains(mirrors, s.Labels["mirror"]) {
			results[s.Labels["result"]] -= s.Value
		}
	}
	for r, v := range results {
		if v == 0 {
			delete(results, r)
		}
	}
	return results
}

// describeAttempts renders attempt counts by result: "skipped 30, unreachable 3".
func describeAttempts(results map[string]float64) string {
	if results == nil {
		return "-"
	}
	var parts []string
	for r, v := range results {
		parts = append(parts, fmt.Sprintf("%s %.0f", r, v))
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "no attempts"
	}
	return strings.Join(parts, ", ")
}
