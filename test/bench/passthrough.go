package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// latencyRow is one pass-through call measured on every target.
type latencyRow struct {
	call   string
	images int
	st     map[string]stats // by target name
	// Heap allocations the proxy process made per call (objects, bytes).
	allocs, bytes float64
	// Garbage collections the proxy ran per 1,000 calls: the calls that
	// land in one run beside the collector's marking on the proxy's thread.
	gcs float64
	// p99CI is a 90 % bootstrap interval of proxy/hop at p99 (p99RatioCI).
	p99CI [2]float64
	// CPU time (user+system) the proxy and the hop process spent per call.
	proxyCPU, hopCPU time.Duration
	// other is the CPU (in cores) used during the row by processes outside
	// the benchmark: load that makes the numbers noisier and slower.
	other float64
	// The same figures for the second proxy build (-compare).
	cmpAllocs, cmpBytes float64
	cmpCPU              time.Duration
}

// callTimeout is the deadline on each measured call, as kubelet sets one
// on every CRI call: the proxy and the hop both forward it.
const callTimeout = 30 * time.Second

// passThrough measures the calls kubelet makes all the time, on every
// target, interleaved.
func (b *bench) passThrough(ctx context.Context, listRounds int) error {
	images, err := b.direct.count(ctx)
	if err != nil {
		return err
	}
	if want := len(b.sources) + 1; images != want {
		return fmt.Errorf("containerd holds %d images, want %d: something else is pulling", images, want)
	}
	if err := b.allocs.calibrate(ctx); err != nil {
		return err
	}
	targets := []*target{b.direct, b.hop, b.hopB, b.proxy}
	if b.hopN != nil {
		targets = append(targets, b.hopN)
	}
	if b.cmp != nil {
		if err := b.cmpAllocs.calibrate(ctx); err != nil {
			return err
		}
		targets = append(targets, b.cmp)
	}
	status := func(name func(*target) string) func(context.Context, *target) error {
		return func(ctx context.Context, t *target) error {
			ctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			resp, err := t.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: name(t)}})
			if err == nil && resp.GetImage() == nil {
				err = fmt.Errorf("image %s not found", name(t))
			}
			return err
		}
	}
	list := func(ctx context.Context, t *target) error {
		ctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		resp, err := t.images.ListImages(ctx, &runtimeapi.ListImagesRequest{})
		if err == nil && len(resp.GetImages()) != images {
			err = fmt.Errorf("listed %d images, want %d", len(resp.GetImages()), images)
		}
		return err
	}
	plain := func(*target) string { return b.plain }
	// kubelet asks the proxy by the name it pulled; containerd itself only
	// knows the mirror's name, so that is what direct and hop are asked.
	aliased := func(t *target) string {
		if t == b.proxy || t == b.cmp {
			return b.sources[0]
		}
		return b.mirrors[0]
	}
	rows := []struct {
		call   string
		rounds int
		fn     func(context.Context, *target) error
	}{
		{"ImageStatus, pass-through (no alias)", b.cfg.statusRounds, status(plain)},
		{"ImageStatus, by original name (alias)", b.cfg.statusRounds, status(aliased)},
		{"ListImages", listRounds, list},
	}
	for _, r := range rows {
		names := make([]string, len(targets))
		for i, t := range targets {
			names[i] = t.name
		}
		logf("%s, %d images: %d rounds on %s", r.call, images, r.rounds, strings.Join(names, ", "))
		warmup := max(10, r.rounds/20)
		before, err := b.allocs.snap(ctx)
		if err != nil {
			return err
		}
		var cmpBefore, cmpAfter allocSnap
		if b.cmp != nil {
			if cmpBefore, err = b.cmpAllocs.snap(ctx); err != nil {
				return err
			}
		}
		cpu0, err := b.cpu()
		if err != nil {
			return err
		}
		samples, err := interleave(ctx, targets, warmup, r.rounds, r.fn)
		if err != nil {
			return fmt.Errorf("%s: %w", r.call, err)
		}
		cpu1, err := b.cpu()
		if err != nil {
			return err
		}
		after, err := b.allocs.snap(ctx)
		if err != nil {
			return err
		}
		if b.cmp != nil {
			if cmpAfter, err = b.cmpAllocs.snap(ctx); err != nil {
				return err
			}
		}
		calls := warmup + r.rounds
		row := latencyRow{call: r.call, images: images, st: map[string]stats{},
			proxyCPU: (cpu1.proxy - cpu0.proxy) / time.Duration(calls), hopCPU: (cpu1.hop - cpu0.hop) / time.Duration(calls),
			other: otherLoad(cpu0, cpu1)}
		row.allocs, row.bytes = b.allocs.perCall(before, after, calls)
		row.gcs = gcsPer1k(before, after, calls)
		for name, d := range samples {
			row.st[name] = summarize(d)
		}
		row.p99CI[0], row.p99CI[1] = p99RatioCI(samples["proxy"], samples["hop"], ciResamples)
		if err := b.saveSamples(r.call, images, targets, samples); err != nil {
			return err
		}
		if b.cmp != nil {
			row.cmpAllocs, row.cmpBytes = b.cmpAllocs.perCall(cmpBefore, cmpAfter, calls)
			row.cmpCPU = (cpu1.cmp - cpu0.cmp) / time.Duration(calls)
			logf("  proxy-b p50 %s, proxy-b/hop p50 %.2f p99 %.2f; CPU/call %s; %.0f allocs/call",
				us(row.st["proxy-b"].p50), ratio(row.st["proxy-b"].p50, row.st["hop"].p50),
				ratio(row.st["proxy-b"].p99, row.st["hop"].p99), us(row.cmpCPU), row.cmpAllocs)
		}
		b.latency = append(b.latency, row)
		logf("  p50 direct %s hop %s proxy %s; proxy/hop p50 %.2f p99 %.2f (90%% CI %.2f–%.2f) (hop-b/hop %.2f %.2f); CPU/call hop %s proxy %s; %.0f allocs/call, %.1f GCs/1k calls; other load %.2f CPUs",
			us(row.st["direct"].p50), us(row.st["hop"].p50), us(row.st["proxy"].p50),
			ratio(row.st["proxy"].p50, row.st["hop"].p50), ratio(row.st["proxy"].p99, row.st["hop"].p99), row.p99CI[0], row.p99CI[1],
			ratio(row.st["hop-b"].p50, row.st["hop"].p50), ratio(row.st["hop-b"].p99, row.st["hop"].p99),
			us(row.hopCPU), us(row.proxyCPU), row.allocs, row.gcs, row.other)
		if n, ok := row.st[hopNName]; ok {
			logf("  hop on %d thread(s): p50 %s, proxy/hop-n p50 %.2f p99 %.2f", b.cfg.hopProcs, us(n.p50),
				ratio(row.st["proxy"].p50, n.p50), ratio(row.st["proxy"].p99, n.p99))
		}
		if err := b.profile(ctx, r.call, images, r.fn); err != nil {
			return err
		}
	}
	return nil
}

// cpuSnap is the CPU time used so far by the proxy, the hop, every process
// of the benchmark together, and the whole machine.
type cpuSnap struct {
	at                           time.Time
	proxy, hop, cmp, ours, total time.Duration
}

func (b *bench) cpu() (cpuSnap, error) {
	s := cpuSnap{at: time.Now()}
	var err error
	if s.total, err = systemBusy(); err != nil {
		return s, err
	}
	hopNPID := 0
	if b.hopNP != nil {
		hopNPID = b.hopNP.pid()
	}
	for _, pid := range []int{b.cfg.proxyPID, b.hopPID, b.hopBP.pid(), hopNPID, b.cfg.comparePID, b.cfg.containerdPID, b.cfg.registryPID, os.Getpid()} {
		if pid == 0 {
			continue
		}
		c, err := procCPU(pid)
		if err != nil {
			return s, err
		}
		s.ours += c
		switch pid {
		case b.cfg.proxyPID:
			s.proxy = c
		case b.hopPID:
			s.hop = c
		case b.cfg.comparePID:
			s.cmp = c
		}
	}
	return s, nil
}

// otherLoad is the average number of CPUs kept busy by processes outside
// the benchmark between two snapshots.
func otherLoad(a, b cpuSnap) float64 {
	wall := b.at.Sub(a.at)
	if wall <= 0 {
		return 0
	}
	return max(0, float64((b.total-a.total)-(b.ours-a.ours))/float64(wall))
}

// saveSamples writes one row's latencies to -samples-dir, if set: a line
// per call, round by round, targets in the order given.
func (b *bench) saveSamples(call string, images int, targets []*target, samples map[string][]time.Duration) error {
	if b.cfg.samplesDir == "" {
		return nil
	}
	if err := os.MkdirAll(b.cfg.samplesDir, 0o755); err != nil {
		return err
	}
	var out strings.Builder
	out.WriteString("round,target,us\n")
	for i := range samples[targets[0].name] {
		for _, t := range targets {
			fmt.Fprintf(&out, "%d,%s,%.1f\n", i, t.name, float64(samples[t.name][i])/float64(time.Microsecond))
		}
	}
	return os.WriteFile(filepath.Join(b.cfg.samplesDir, fmt.Sprintf("%s-%d.csv", slug(call), images)), []byte(out.String()), 0o644)
}

// slug is call as a file name.
func slug(call string) string {
	return strings.NewReplacer(",", "", " ", "-", "(", "", ")", "").Replace(strings.ToLower(call))
}

// profile saves CPU profiles of the proxy and of the hop, each while only it
// is called, and the proxy's allocation profile, when -profile-dir is set.
// It runs after the measurement so the profiler's cost never lands in the
// numbers. Compare with: go tool pprof -top -diff_base HOP.cpu.pb.gz PROXY.cpu.pb.gz
func (b *bench) profile(ctx context.Context, call string, images int, fn func(context.Context, *target) error) error {
	if b.cfg.profileDir == "" {
		return nil
	}
	const seconds = 10
	base := filepath.Join(b.cfg.profileDir, fmt.Sprintf("%s-%d", slug(call), images))
	if err := os.MkdirAll(b.cfg.profileDir, 0o755); err != nil {
		return err
	}
	for _, p := range []struct {
		t    *target
		addr string
	}{{b.proxy, b.cfg.metricsAddr}, {b.hop, b.hopPprof}} {
		pctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() {
			errc <- fetch(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.addr, seconds), base+"."+p.t.name+".cpu.pb.gz")
			cancel()
		}()
		calls := 0
		for pctx.Err() == nil {
			if err := fn(pctx, p.t); err != nil && pctx.Err() == nil {
				cancel()
				<-errc
				return err
			}
			calls++
		}
		cancel()
		if err := <-errc; err != nil {
			return err
		}
		// The call count turns the profile's seconds into time per call.
		if err := os.WriteFile(base+"."+p.t.name+".calls", fmt.Appendf(nil, "%d\n", calls), 0o644); err != nil {
			return err
		}
	}
	if err := fetch(ctx, "http://"+b.cfg.metricsAddr+"/debug/pprof/allocs", base+".proxy.allocs.pb.gz"); err != nil {
		return err
	}
	logf("  profiles: %s.{proxy,hop}.cpu.pb.gz, %s.proxy.allocs.pb.gz", base, base)
	return nil
}

func fetch(ctx context.Context, url, file string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	return errors.Join(err, f.Close())
}
