package main

import (
	"context"
	"slices"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/promtest"
)

// runtimePulls counts the pull attempts that reached the runtime: the
// results a runtime call produces, not the skipped/missing/unreachable
// screenings that never asked it.
func runtimePulls(samples promtest.Set) float64 {
	return samples.SumFunc("cri_mirror_pull_attempts_total", func(l map[string]string) bool {
		switch l["result"] {
		case "success", "error", "timeout", "canceled":
			return true
		}
		return false
	})
}

// allocCounter measures the proxy's heap allocations over a window of calls
// from the Go runtime's own counters on /metrics (go_memstats_mallocs_total,
// go_memstats_alloc_bytes_total). That is the real binary with its
// interceptors and its connection to the runtime, not a test double. The
// cost of the scrapes themselves is measured with no calls in between and
// subtracted.
type allocCounter struct {
	addr                string
	scrapeObjs, scrapeB float64
}

// allocSnap is the proxy's allocation counters, and its count of
// completed garbage collections (go_gc_duration_seconds_count), at one
// scrape. A scrape rarely sets off a collection, so gcs is not calibrated.
type allocSnap struct{ objs, bytes, gcs float64 }

func (a *allocCounter) snap(ctx context.Context) (allocSnap, error) {
	s, err := promtest.Scrape(ctx, a.addr)
	if err != nil {
		return allocSnap{}, err
	}
	return allocSnap{
		objs:  s.Sum("go_memstats_mallocs_total", nil),
		bytes: s.Sum("go_memstats_alloc_bytes_total", nil),
		gcs:   s.Sum("go_gc_duration_seconds_count", nil),
	}, nil
}

// calibrate measures what one scrape allocates (the median of a few).
func (a *allocCounter) calibrate(ctx context.Context) error {
	var objs, bytes []float64
	prev, err := a.snap(ctx)
	if err != nil {
		return err
	}
	for range 7 {
		cur, err := a.snap(ctx)
		if err != nil {
			return err
		}
		objs, bytes = append(objs, cur.objs-prev.objs), append(bytes, cur.bytes-prev.bytes)
		prev = cur
	}
	a.scrapeObjs, a.scrapeB = medianF(objs), medianF(bytes)
	return nil
}

// perCall returns allocations and bytes per call between two snapshots.
func (a *allocCounter) perCall(before, after allocSnap, calls int) (objs, bytes float64) {
	if calls == 0 {
		return 0, 0
	}
	return (after.objs - before.objs - a.scrapeObjs) / float64(calls),
		(after.bytes - before.bytes - a.scrapeB) / float64(calls)
}

// gcsPer1k returns the collections per 1,000 calls between two snapshots.
func gcsPer1k(before, after allocSnap, calls int) float64 {
	if calls == 0 {
		return 0
	}
	return (after.gcs - before.gcs) * 1000 / float64(calls)
}

func medianF(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
