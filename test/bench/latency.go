package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// stats summarises one series of latencies.
type stats struct {
	n             int
	p50, p99, max time.Duration
}

func summarize(d []time.Duration) stats {
	if len(d) == 0 {
		return stats{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return stats{n: len(s), p50: quantile(s, 0.50), p99: quantile(s, 0.99), max: s[len(s)-1]}
}

// quantile of sorted samples, nearest rank.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func median(d []time.Duration) time.Duration { return summarize(d).p50 }

// ciResamples is how many bootstrap resamples p99RatioCI draws.
const ciResamples = 200

// p99RatioCI returns a 90 % bootstrap interval of p99(a)/p99(b), where a
// and b were measured round by round side by side (a[i] and b[i] in the
// same round): rounds are drawn with replacement, the same ones for both,
// and the interval is the 5th to the 95th percentile of the resampled
// ratios. It tells how far the ratio itself could move on another run of
// the same length; zeros if there is nothing to resample.
func p99RatioCI(a, b []time.Duration, resamples int) (lo, hi float64) {
	n := min(len(a), len(b))
	if n == 0 || resamples <= 0 {
		return 0, 0
	}
	rng := rand.New(rand.NewPCG(2, uint64(n)))
	ra, rb := make([]time.Duration, n), make([]time.Duration, n)
	ratios := make([]float64, 0, resamples)
	for range resamples {
		for i := range n {
			j := rng.IntN(n)
			ra[i], rb[i] = a[j], b[j]
		}
		slices.Sort(ra)
		slices.Sort(rb)
		if q := quantile(rb, 0.99); q > 0 {
			ratios = append(ratios, float64(quantile(ra, 0.99))/float64(q))
		}
	}
	if len(ratios) == 0 {
		return 0, 0
	}
	slices.Sort(ratios)
	at := func(q float64) float64 { return ratios[max(0, min(int(q*float64(len(ratios))), len(ratios)-1))] }
	return at(0.05), at(0.95)
}

// interleave calls call once per target per round, in a fresh random order
// each round, so that drift in the machine's state (CPU frequency, caches,
// other load, containerd's own GC) falls on every target alike, and no
// target always follows the same other one (a fixed rotation would give
// each target the same predecessor, and a call's latency depends on which
// process ran just before). The seed is fixed: runs are repeatable. The
// first warmup rounds are not recorded.
func interleave(ctx context.Context, targets []*target, warmup, rounds int,
	call func(context.Context, *target) error) (map[string][]time.Duration, error) {
	rng := rand.New(rand.NewPCG(1, uint64(len(targets))))
	out := make(map[string][]time.Duration, len(targets))
	for r := -warmup; r < rounds; r++ {
		for _, i := range rng.Perm(len(targets)) {
			t := targets[i]
			start := time.Now()
			if err := call(ctx, t); err != nil {
				return nil, fmt.Errorf("%s: %w", t.name, err)
			}
			if r >= 0 {
				out[t.name] = append(out[t.name], time.Since(start))
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
