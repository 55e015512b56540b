package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/promtest"
)

// memoryRow is the resident memory of the proxy (and, for scale, of the
// reference hop, a bare Go gRPC relay) in one state.
type memoryRow struct {
	state          string
	rss, hwm       int64 // proxy VmRSS and VmHWM, KiB
	hopRSS, hopHWM int64
	heap           float64 // proxy's go_memstats_heap_inuse_bytes
	goroutines     float64
	note           string
	many           bool // the proxy with manyAliases aliases (its own limit)
}

// runtimeStats reads the proxy's live heap and goroutine count, which tell
// memory in use from memory the Go runtime merely has not returned yet.
func (b *bench) runtimeStats(ctx context.Context, row *memoryRow) error {
	return b.runtimeStatsOf(ctx, b.cfg.metricsAddr, row)
}

// runtimeStatsOf is runtimeStats of the proxy whose metrics are at addr.
func (b *bench) runtimeStatsOf(ctx context.Context, addr string, row *memoryRow) error {
	s, err := promtest.Scrape(ctx, addr)
	if err != nil {
		return err
	}
	row.heap = s.Sum("go_memstats_heap_inuse_bytes", nil)
	row.goroutines = s.Sum("go_goroutines", nil)
	return nil
}

// memoryIdle records both processes' memory after a short settle.
func (b *bench) memoryIdle(ctx context.Context, state string) error {
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return ctx.Err()
	}
	row := memoryRow{state: state}
	var err error
	if row.rss, row.hwm, err = procMem(b.cfg.proxyPID); err != nil {
		return err
	}
	if row.hopRSS, row.hopHWM, err = procMem(b.hopPID); err != nil {
		return err
	}
	if err := b.runtimeStats(ctx, &row); err != nil {
		return err
	}
	b.memory = append(b.memory, row)
	logf("memory %s: proxy VmRSS %s (VmHWM %s), hop VmRSS %s", state, mib(row.rss), mib(row.hwm), mib(row.hopRSS))
	return nil
}

// memoryLoad keeps N callers issuing ImageStatus for a while, first through
// the hop and then through the proxy, sampling VmRSS as it goes.
func (b *bench) memoryLoad(ctx context.Context) error {
	row := memoryRow{state: fmt.Sprintf("%d concurrent ImageStatus callers, %s", b.cfg.rssCallers, b.cfg.rssDuration)}
	hopPeak, _, err := b.load(ctx, b.hop, b.hopPID)
	if err != nil {
		return err
	}
	peak, rate, err := b.load(ctx, b.proxy, b.cfg.proxyPID)
	if err != nil {
		return err
	}
	row.rss, row.hopRSS = peak, hopPeak
	if _, row.hwm, err = procMem(b.cfg.proxyPID); err != nil {
		return err
	}
	if _, row.hopHWM, err = procMem(b.hopPID); err != nil {
		return err
	}
	if err := b.runtimeStats(ctx, &row); err != nil {
		return err
	}
	row.note = fmt.Sprintf("VmRSS: peak sampled every 20ms; heap and goroutines: after; proxy served %.0f calls/s", rate)
	b.memory = append(b.memory, row)
	logf("memory under load: proxy peak VmRSS %s (VmHWM %s) at %.0f calls/s; hop peak %s",
		mib(row.rss), mib(row.hwm), rate, mib(hopPeak))
	return nil
}

// load runs the callers against t and returns the peak VmRSS of pid and the
// call rate. Any failed call fails the phase: memory under errors is not
// memory under load.
func (b *bench) load(ctx context.Context, t *target, pid int) (peak int64, rate float64, err error) {
	lctx, cancel := context.WithTimeout(ctx, b.cfg.rssDuration)
	defer cancel()
	var (
		calls    atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	req := &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: b.plain}}
	start := time.Now()
	for range b.cfg.rssCallers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lctx.Err() == nil {
				// Calls are not tied to the window: the last ones finish
				// after it rather than end in deadline errors, which the
				// server may report before the client's own context notices.
				cctx, ccancel := context.WithTimeout(ctx, callTimeout)
				_, err := t.images.ImageStatus(cctx, req)
				ccancel()
				if err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				calls.Add(1)
			}
		}()
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for lctx.Err() == nil {
		if rss, _, err := procMem(pid); err == nil {
			peak = max(peak, rss)
		}
		select {
		case <-tick.C:
		case <-lctx.Done():
		}
	}
	wg.Wait()
	if firstErr != nil {
		return 0, 0, fmt.Errorf("ImageStatus under load via %s: %w", t.name, firstErr)
	}
	return peak, float64(calls.Load()) / time.Since(start).Seconds(), ctx.Err()
}
