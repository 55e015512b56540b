package main

import (
	"math/rand/v2"
	"testing"
	"time"
)

// The interval of a p99 ratio holds the true ratio, narrows with more
// rounds, and is absent when there is nothing to resample.
func TestP99RatioCI(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	series := func(n int, scale float64) []time.Duration {
		d := make([]time.Duration, n)
		for i := range d {
			// A long tail: most calls near 400 µs, a few up to 10×.
			d[i] = time.Duration(scale * float64(400*time.Microsecond) * (1 + rng.ExpFloat64()/4))
		}
		return d
	}
	width := map[int]float64{}
	for _, n := range []int{2000, 20000} {
		for _, want := range []float64{1, 1.2} {
			lo, hi := p99RatioCI(series(n, want), series(n, 1), ciResamples)
			if !(lo <= want && want <= hi) || hi-lo > 0.5 {
				t.Errorf("n=%d, true ratio %.2f: interval %.3f–%.3f", n, want, lo, hi)
			}
			width[n] = max(width[n], hi-lo)
		}
	}
	if width[20000] >= width[2000]/2 {
		t.Errorf("the interval did not narrow with 10× the rounds: %.3f at 2,000, %.3f at 20,000", width[2000], width[20000])
	}
	if lo, hi := p99RatioCI(nil, series(10, 1), ciResamples); lo != 0 || hi != 0 {
		t.Errorf("no samples: interval %v–%v, want none", lo, hi)
	}
}
