package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// bench holds the connections and the results of one run.
type bench struct {
	cfg     *config
	started time.Time

	direct *target // containerd's own socket
	proxy  *target // cri-mirror-proxy in front of it
	allocs *allocCounter
	// runtime is containerd's log, read for the runtime's own time on each
	// timed pull.
	runtime *runtimeLog

	// The reference hop in front of containerd, its process and (with
	// -profile-dir) its pprof address.
	hop      *target
	hopP     *hopProcess
	hopPID   int
	hopPprof string
	// hopB is a second, identical hop: hop-b/hop is the error of the method
	// itself (an A/A test), reported beside every proxy/hop ratio.
	hopB  *target
	hopBP *hopProcess
	// hopN is the hop on the proxy's number of threads (-hop-procs,
	// "hop-n"): the proxy runs on one by default (--procs), and a hop on
	// one is faster than the hop on the Go runtime's default; proxy/hop-n
	// is the proxy's cost over a forwarder run as it is.
	hopN  *target
	hopNP *hopProcess

	// first is the optional proxy that always probes before pulling
	// (-probe-first), "proxy-probe-first".
	first *target
	// tagOn is the optional proxy with a tag-check policy (-tag-check-proxy),
	// "proxy-tag-check".
	tagOn *target

	// cmp is the optional second proxy build (-compare), "proxy-b".
	cmp       *target
	cmpAllocs *allocCounter

	// plain is an image containerd pulled itself: the proxy has no alias for it.
	plain string

	// The numbered image set: its one shared layer, and by index the source
	// names (pulled through the proxy, so each has an alias) and what
	// containerd calls them.
	layer            v1.Layer
	sources, mirrors []string

	env      environment
	cpuStart cpuSnap // for the machine's other load over the whole run
	setup    []setupStep
	latency  []latencyRow
	pulls    pullResult
	dedup    dedupResult
	fallback []fallbackRow
	memory   []memoryRow
	notes    []string
}

// setupStep is a timed preparation step, reported so the cost of the
// environment is visible next to the measurements.
type setupStep struct {
	what string
	took time.Duration
}

func newBench(ctx context.Context, cfg *config) (*bench, error) {
	b := &bench{cfg: cfg, started: time.Now(), allocs: &allocCounter{addr: cfg.metricsAddr}, runtime: &runtimeLog{path: cfg.containerdLog}}
	var err error
	if b.direct, err = dial("direct", cfg.containerdSock); err != nil {
		return nil, err
	}
	if b.proxy, err = dial("proxy", cfg.proxySock); err != nil {
		b.close()
		return nil, err
	}
	if cfg.probeFirstSock != "" {
		if b.first, err = dial("proxy-probe-first", cfg.probeFirstSock); err != nil {
			b.close()
			return nil, err
		}
	}
	if cfg.tagCheckSock != "" {
		if b.tagOn, err = dial("proxy-tag-check", cfg.tagCheckSock); err != nil {
			b.close()
			return nil, err
		}
	}
	if cfg.compareSock != "" {
		if b.cmp, err = dial("proxy-b", cfg.compareSock); err != nil {
			b.close()
			return nil, err
		}
		b.cmpAllocs = &allocCounter{addr: cfg.compareMetrics}
	}
	hopSock := filepath.Join(cfg.workDir, "hop.sock")
	if cfg.profileDir != "" {
		if b.hopPprof, err = freeLoopbackAddr(); err != nil {
			b.close()
			return nil, err
		}
	}
	if b.hopP, err = startHopProcess(ctx, hopSock, cfg.containerdSock, b.hopPprof, 0); err != nil {
		b.close()
		return nil, err
	}
	b.hopPID = b.hopP.pid()
	if b.hop, err = dial("hop", hopSock); err != nil {
		b.close()
		return nil, err
	}
	hopBSock := filepath.Join(cfg.workDir, "hop-b.sock")
	if b.hopBP, err = startHopProcess(ctx, hopBSock, cfg.containerdSock, "", 0); err != nil {
		b.close()
		return nil, err
	}
	if b.hopB, err = dial("hop-b", hopBSock); err != nil {
		b.close()
		return nil, err
	}
	if cfg.hopProcs > 0 {
		sock := filepath.Join(cfg.workDir, "hop-n.sock")
		if b.hopNP, err = startHopProcess(ctx, sock, cfg.containerdSock, "", cfg.hopProcs); err != nil {
			b.close()
			return nil, err
		}
		if b.hopN, err = dial(hopNName, sock); err != nil {
			b.close()
			return nil, err
		}
	}
	return b, nil
}

// freeLoopbackAddr returns a loopback address nothing listens on (it may
// be taken by the time it is used; it is only for the optional profiles).
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (b *bench) close() {
	for _, t := range []*target{b.direct, b.hop, b.hopB, b.hopN, b.proxy, b.first, b.tagOn, b.cmp} {
		if t != nil {
			t.close()
		}
	}
	for _, h := range []*hopProcess{b.hopP, b.hopBP, b.hopNP} {
		if h != nil {
			h.stop()
		}
	}
}

// step runs one timed setup step and logs it.
func (b *bench) step(what string, fn func() error) error {
	logf("%s ...", what)
	start := time.Now()
	if err := fn(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	d := time.Since(start)
	b.setup = append(b.setup, setupStep{what: what, took: d})
	logf("%s: done in %s", what, d.Round(time.Millisecond))
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: %s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// run runs the phases in an order that keeps each one clean: the small-set
// measurements and the memory phase come before any pull has grown the
// proxy's heap, the pull phases remove what they pull, and the large set
// comes last because it cannot be undone cheaply.
func (b *bench) run(ctx context.Context) error {
	b.env = describeEnvironment(ctx, b)
	var err error
	if b.cpuStart, err = b.cpu(); err != nil {
		return err
	}
	if err := b.memoryIdle(ctx, "idle after start"); err != nil {
		return err
	}
	if err := b.prepare(ctx); err != nil {
		return err
	}
	phases := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"passthrough", func(ctx context.Context) error { return b.passThrough(ctx, b.cfg.listRounds) }},
		{"memory", func(ctx context.Context) error {
			if err := b.memoryIdle(ctx, fmt.Sprintf("idle, %d images", len(b.sources)+1)); err != nil {
				return err
			}
			return b.memoryLoad(ctx)
		}},
		{"pull", b.mirrorPulls},
		{"dedup", b.dedupPulls},
		{"fallback", b.fallbacks},
		{"large", b.large},
	}
	for _, p := range phases {
		if !b.cfg.want(p.name) {
			continue
		}
		if err := p.fn(ctx); err != nil {
			return err
		}
	}
	return nil
}

// large repeats the pass-through measurements with the large image set,
// then measures the proxy's memory after them and with many more aliases.
func (b *bench) large(ctx context.Context) error {
	if b.cfg.many <= 0 {
		b.notes = append(b.notes, "The large image set was skipped (-images 0).")
		return nil
	}
	if err := b.grow(ctx, b.cfg.many); err != nil {
		return err
	}
	if err := b.memoryIdle(ctx, fmt.Sprintf("idle, %d images + aliases", b.cfg.many)); err != nil {
		return err
	}
	if err := b.passThrough(ctx, b.cfg.manyRounds); err != nil {
		return err
	}
	// A ListImages of the large set fills the listing cache and leaves its
	// garbage: the memory a node sees after kubelet's first listing.
	if err := b.memoryIdle(ctx, fmt.Sprintf("idle, %d images + aliases, after ListImages", b.cfg.many)); err != nil {
		return err
	}
	return b.manyAliasesMemory(ctx)
}

// hopNName is the target name of the hop on the proxy's threads (hopN).
const hopNName = "hop-n"
