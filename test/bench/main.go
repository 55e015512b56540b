// Command bench measures cri-mirror-proxy against the real containerd and a
// real registry, side by side in one run, and prints a table of ratios.
//
// test/bench.sh brings up docker-registry, containerd and the proxy (with
// test/lib.sh) and runs this driver; run that script, not this command. The
// driver then compares, interleaved call by call:
//
//  1. ImageStatus and ListImages straight on containerd's socket, through a
//     reference hop (the thinnest possible forwarder: raw bytes relayed,
//     nothing decoded; see hop.go) and through the proxy, with 10 and with
//     5,000 images that all carry proxy aliases;
//  2. a mirror pull through the proxy against containerd pulling the mirror
//     reference itself, and (-tag-check-proxy) with the tag check on vs off;
//  3. 100 concurrent identical pulls against one pull;
//  4. the cost of a refused, a black-holed and a tag-less first mirror;
//  5. the proxy's resident memory, idle and under 1,000 concurrent calls.
//
// Every pass-through ratio comes with its own error bar: a second, identical
// hop (hop-b) is measured beside the first. -compare adds a second proxy
// build to the pass-through phases (to measure a change before and after),
// -phases runs a subset, -profile-dir saves CPU profiles of proxy and hop.
//
// Results go to stdout and, with -out, to a Markdown file with the command
// and date. bench_test.go holds in-process micro-benchmarks of the same
// paths that need neither root nor containerd.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

type config struct {
	containerdSock string
	containerdLog  string
	containerdPID  int
	registryPID    int
	proxySock      string
	proxyPID       int
	metricsAddr    string
	// An optional second proxy build, measured side by side with the first
	// in the pass-through phases (to check a change before and after).
	compareSock    string
	comparePID     int
	compareMetrics string
	// An optional proxy that always probes a mirror before the runtime
	// pulls (--probe-overlap=0), measured beside the first in the pull phase.
	probeFirstSock string
	// An optional proxy with a tag-check policy on the tag check case's
	// source (tagCheckSource), measured beside the first in the pull phase.
	tagCheckSock    string
	tagCheckMetrics string
	registry        string
	closedPort      int
	blackholePort   int
	probeTimeout    time.Duration
	stallTimeout    time.Duration
	proxyBin        string
	proxyConf       string
	workDir         string

	many         int
	hopProcs     int
	statusRounds int
	listRounds   int
	manyRounds   int
	pullRounds   int
	fallbackReps int
	dedupRounds  int
	concurrency  int
	rssCallers   int
	rssDuration  time.Duration
	profileDir   string
	samplesDir   string

	out       string
	command   string
	revision  string
	proxyArgs string // extra proxy flags test/bench.sh passed (BENCH_PROXY_ARGS)
	since     int64  // unix time the script started, for the total run time

	phases    string
	printConf bool
	hopListen string // internal: run as the reference hop process
	hopPprof  string // internal: the hop's pprof address
}

// phase names for -phases.
var allPhases = []string{"passthrough", "memory", "pull", "dedup", "fallback", "large"}

// want reports whether phase is to run.
func (c *config) want(phase string) bool {
	if c.phases == "" || c.phases == "all" {
		return true
	}
	for _, p := range strings.Split(c.phases, ",") {
		if strings.TrimSpace(p) == phase {
			return true
		}
	}
	return false
}

func parseFlags() *config {
	c := &config{}
	flag.StringVar(&c.containerdSock, "containerd", "", "containerd CRI socket path")
	flag.StringVar(&c.containerdLog, "containerd-log", "", "containerd's log file, to count the pulls it was asked for (the dedup verdict needs it)")
	flag.IntVar(&c.containerdPID, "containerd-pid", 0, "pid of containerd, to tell other load on the machine from the benchmark's (optional)")
	flag.IntVar(&c.registryPID, "registry-pid", 0, "pid of the registry, likewise (optional)")
	flag.StringVar(&c.proxySock, "proxy", "", "cri-mirror-proxy socket path")
	flag.IntVar(&c.proxyPID, "proxy-pid", 0, "pid of the proxy, for its memory")
	flag.StringVar(&c.metricsAddr, "metrics", "", "the proxy's metrics address (host:port)")
	flag.StringVar(&c.proxyBin, "proxy-bin", "", "the proxy binary, to start a proxy with many aliases for the memory rows (optional)")
	flag.StringVar(&c.proxyConf, "proxy-conf", "", "the registries.conf the proxy runs with (with -proxy-bin)")
	flag.StringVar(&c.compareSock, "compare", "", "socket of a second proxy build to measure side by side in the pass-through phases (optional)")
	flag.IntVar(&c.comparePID, "compare-pid", 0, "pid of the second proxy")
	flag.StringVar(&c.compareMetrics, "compare-metrics", "", "metrics address of the second proxy")
	flag.StringVar(&c.probeFirstSock, "probe-first", "", "socket of a proxy running with --probe-overlap=0, measured beside the proxy in the mirror pull phase (optional)")
	flag.StringVar(&c.tagCheckSock, "tag-check-proxy", "", "socket of a proxy running with --tag-check <registry>/tagsrc=source-required, measured beside the proxy (tag check off) in the mirror pull phase (optional)")
	flag.StringVar(&c.tagCheckMetrics, "tag-check-metrics", "", "metrics address of the -tag-check-proxy")
	flag.StringVar(&c.registry, "registry", "", "the local registry (127.0.0.1:PORT) serving as the good mirror")
	flag.IntVar(&c.closedPort, "closed-port", 0, "a loopback port nothing listens on (the refusing mirror)")
	flag.IntVar(&c.blackholePort, "blackhole-port", 0, "a free loopback port for the black-holing mirror")
	flag.DurationVar(&c.probeTimeout, "probe-timeout", 2*time.Second, "the proxy's --probe-timeout (the black-hole target)")
	flag.DurationVar(&c.stallTimeout, "stall-timeout", 30*time.Second, "the proxy's --stall-timeout (the black-hole target)")
	flag.StringVar(&c.workDir, "work-dir", "", "directory for the hop's socket (short path)")

	flag.IntVar(&c.many, "images", 5000, "size of the large image set (0: skip the large case)")
	flag.IntVar(&c.hopProcs, "hop-procs", 1, "also measure a hop running on this many threads (GOMAXPROCS), the proxy's --procs, in the pass-through phase (0: no such hop)")
	// 20,000 samples put 200 in the slowest 1 %. At 3,000 (30 there), the
	// p99s of two identical processes differed by up to 43 %.
	flag.IntVar(&c.statusRounds, "status-rounds", 20000, "ImageStatus samples per target")
	flag.IntVar(&c.listRounds, "list-rounds", 10000, "ListImages samples per target with 10 images")
	flag.IntVar(&c.manyRounds, "many-rounds", 300, "ListImages samples per target with the large set")
	flag.IntVar(&c.pullRounds, "pull-rounds", 200, "mirror pulls per target")
	flag.IntVar(&c.fallbackReps, "fallback-reps", 3, "repetitions of the fallback cases, each with fresh mirrors (pass the same to -print-conf)")
	flag.IntVar(&c.dedupRounds, "dedup-rounds", 3, "rounds of one pull vs concurrent identical pulls")
	flag.IntVar(&c.concurrency, "concurrency", 100, "identical pulls started at once")
	flag.IntVar(&c.rssCallers, "rss-callers", 1000, "concurrent ImageStatus callers for the memory phase")
	flag.DurationVar(&c.rssDuration, "rss-duration", 5*time.Second, "how long the memory phase keeps them calling")
	flag.StringVar(&c.samplesDir, "samples-dir", "", "write every pass-through row's latencies here, one CSV per row (round, target, µs), for analysis (optional)")
	flag.StringVar(&c.profileDir, "profile-dir", "", "save CPU profiles of proxy and hop and the proxy's heap profile for each pass-through row here (optional)")

	flag.StringVar(&c.out, "out", "", "also write the results as Markdown to this file")
	flag.StringVar(&c.command, "command", "", "the command line to record in -out")
	flag.StringVar(&c.revision, "revision", "", "source revision to record in -out")
	flag.StringVar(&c.proxyArgs, "proxy-args", "", "extra flags the proxy runs with, to record in -out")
	flag.Int64Var(&c.since, "since", 0, "unix time the whole run started (test/bench.sh sets it)")

	flag.StringVar(&c.phases, "phases", "all", "comma-separated phases to run, of "+strings.Join(allPhases, ","))
	flag.BoolVar(&c.printConf, "print-conf", false, "print the registries.conf for the proxy and exit")
	flag.StringVar(&c.hopListen, "hop", "", "internal: serve the reference hop on this socket, in front of -containerd")
	flag.StringVar(&c.hopPprof, "hop-pprof", "", "internal: serve the hop's /debug/pprof/ on this address")
	flag.Parse()
	return c
}

func (c *config) check() error {
	var missing []string
	for _, f := range []struct {
		name  string
		unset bool
	}{
		{"-containerd", c.containerdSock == ""}, {"-containerd-log", c.containerdLog == ""}, {"-proxy", c.proxySock == ""}, {"-proxy-pid", c.proxyPID == 0},
		{"-metrics", c.metricsAddr == ""}, {"-registry", c.registry == ""}, {"-closed-port", c.closedPort == 0},
		{"-blackhole-port", c.blackholePort == 0}, {"-work-dir", c.workDir == ""},
	} {
		if f.unset {
			missing = append(missing, f.name)
		}
	}
	if c.tagCheckSock != "" && c.tagCheckMetrics == "" {
		missing = append(missing, "-tag-check-metrics")
	}
	if c.compareSock != "" && (c.comparePID == 0 || c.compareMetrics == "") {
		missing = append(missing, "-compare-pid", "-compare-metrics")
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %v (run test/bench.sh rather than this driver)", missing)
	}
	return nil
}

func main() {
	cfg := parseFlags()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		if errors.Is(err, context.Canceled) {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg *config) error {
	switch {
	case cfg.printConf:
		if cfg.registry == "" || cfg.closedPort == 0 || cfg.blackholePort == 0 {
			return errors.New("-print-conf needs -registry, -closed-port and -blackhole-port")
		}
		return writeConf(os.Stdout, cfg)
	case cfg.hopListen != "":
		return serveHop(ctx, cfg.hopListen, cfg.containerdSock, cfg.hopPprof)
	}
	if err := cfg.check(); err != nil {
		return err
	}
	for _, p := range strings.Split(cfg.phases, ",") {
		if p = strings.TrimSpace(p); p != "all" && !slices.Contains(allPhases, p) {
			return fmt.Errorf("-phases: unknown phase %q (have %s)", p, strings.Join(allPhases, ","))
		}
	}
	// Every phase is bounded; this bounds the whole run as well.
	ctx, cancel := context.WithTimeout(ctx, 40*time.Minute)
	defer cancel()
	b, err := newBench(ctx, cfg)
	if err != nil {
		return err
	}
	defer b.close()
	if err := b.run(ctx); err != nil {
		return err
	}
	return b.report()
}
