package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/metrics"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/proxy"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
)

type serveConfig struct {
	rules           rulesConfig
	listen          string
	listenMode      uint64
	listenGroup     string
	runtimeEndpoint string
	stateDir        string
	metricsAddress  string
	pprof           bool
	procs           int
	authFile        string
	attemptTimeout  time.Duration
	stallTimeout    time.Duration
	probe           bool
	probeTimeout    time.Duration
	probeOverlap    time.Duration
	cooldown        time.Duration
	substitute      bool
	indexDir        string
	indexTimeout    time.Duration
	platform        string
	tagCheck        *resolver.TagCheckPolicy
	tagCheckTimeout time.Duration
	shutdownTimeout time.Duration
	logLevel        string
	logFormat       string

	output        string          // -o of resolve, check-config and status: text or json
	args          []string        // positional arguments (resolve's IMAGE)
	printSettings func(io.Writer) // prints every setting and where it came from
	settings      func() []setting
}

// parseServe parses the settings of serve. check-config, resolve and status
// take the same settings (and config file), so what they check is what serve
// would run, and status finds the daemon serve started; resolve wants the
// IMAGE argument. Each lists in its help only the flags it uses.
func parseServe(name string, args []string, stdout, stderr io.Writer) (serveConfig, error) {
	var c serveConfig
	synopsis, nargs := name+" [flags]", 0
	if name == "resolve" {
		synopsis, nargs = "resolve [flags] IMAGE", 1
	}
	f := newFlags(name, synopsis, stdout, stderr)
	f.argName = "IMAGE"
	f.loadConfig(args)
	if name != "serve" {
		f.Output(&c.output)
	}
	c.rules.register(f)
	f.String(&c.listen, "listen", "unix:///run/cri-mirror-proxy/cri.sock", "CRI socket to serve on")
	f.Mode(&c.listenMode, "listen-mode", 0o660, "file mode of the CRI socket (never world-writable)")
	f.String(&c.listenGroup, "listen-group", "", "group (name or id) owning the CRI socket (empty: the process's group)")
	f.String(&c.runtimeEndpoint, "runtime-endpoint", "unix:///run/containerd/containerd.sock", "CRI socket of the real runtime")
	f.String(&c.stateDir, "state-dir", "/var/lib/cri-mirror-proxy", "directory of the alias database")
	f.String(&c.metricsAddress, "metrics-address", "127.0.0.1:9464", "HTTP address for /metrics, /healthz, /readyz and /status (empty: off)")
	f.Count(&c.procs, "procs", defaultProcs(), "threads running Go code at once (GOMAXPROCS); 0: Go's choice, one per CPU the process may use, or the GOMAXPROCS environment variable, which makes 0 the default")
	f.Bool(&c.pprof, "pprof", false, "also serve /debug/pprof/ on the metrics address (anyone who can reach it can read stacks and start profiles)")
	f.String(&c.authFile, "auth-file", "", "auth.json with credentials for mirror hosts (default: the containers/image search order)")
	f.Duration(&c.attemptTimeout, "attempt-timeout", 0, "bound on a mirror attempt that has another candidate after it (0: the caller's deadline only)")
	f.Duration(&c.stallTimeout, "stall-timeout", proxy.DefaultStallTimeout, "a mirror attempt that has another candidate after it is abandoned when the runtime downloads nothing, or under 1 KiB/s while downloading, for this long (containerd only: read from its ingest progress; 0: off)")
	f.Bool(&c.probe, "probe", true, "check a mirror has the manifest (HEAD, containers/image docker transport) before, or while (see --probe-overlap), the runtime pulls from it")
	f.Duration(&c.probeTimeout, "probe-timeout", 2*time.Second, "bound on one manifest probe")
	f.Duration(&c.probeOverlap, "probe-overlap", proxy.DefaultProbeOverlap, "a mirror whose last answer within this long was a hit is pulled from at once, and probed alongside a pull that takes over 250ms; a missing or unreachable verdict stops that pull (0: always probe first)")
	f.Duration(&c.cooldown, "mirror-cooldown", proxy.DefaultCooldown, "how long a failed mirror is held back before it is tried again (0: never held back)")
	f.Bool(&c.substitute, "digest-substitution", true, "serve a pull by the digest of a multi-arch index that no candidate has from the node's manifest of that index, once the index bytes are found and match the digest")
	f.String(&c.indexDir, "index-dir", "", "directory of saved index bytes for the digest substitution, one file per index named sha256-<hex of its digest> (empty: none)")
	f.Duration(&c.indexTimeout, "index-timeout", 10*time.Second, "bound on one registry request of the digest substitution")
	f.String(&c.platform, "platform", "", "os/arch[/variant] the digest substitution picks from an index (empty: the node's, as the runtime picks it)")
	f.TagCheck(&c.tagCheck, "per-prefix check of a mirror's answer for a tag against the source: prefix=off|source-if-reachable|source-required, comma-separated (config file: a [tag-check] table of prefix = mode)")
	f.Duration(&c.tagCheckTimeout, "tag-check-timeout", 2*time.Second, "bound on all of the tag check's requests for one pull (the HEADs to the source and the mirrors, and the manifest reads of a platform comparison)")
	f.Duration(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long a stop waits for in-flight calls")
	f.String(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.String(&c.logFormat, "log-format", "text", "log format: text or json")
	switch name {
	case "resolve":
		f.fs.VisitAll(func(fl *flag.Flag) {
			if !slices.Contains([]string{"config", "registries-conf", "registries-conf-dir", "o", "digest-substitution", "index-dir", "platform", "tag-check"}, fl.Name) {
				f.hide(fl.Name)
			}
		})
	case "status":
		f.fs.VisitAll(func(fl *flag.Flag) {
			if !slices.Contains([]string{"config", "metrics-address", "o"}, fl.Name) {
				f.hide(fl.Name)
			}
		})
	}
	if err := f.parse(args, nargs, nargs); err != nil {
		return c, err
	}
	c.args = f.args
	c.printSettings = f.printSettings
	c.settings = f.settingList
	return c, nil
}

func newLogger(level, format string) (*logrus.Logger, error) {
	log := logrus.New()
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("--log-level: %w", err)}
	}
	log.SetLevel(lvl)
	switch format {
	case "text":
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	case "json":
		log.SetFormatter(&secondsJSON{})
	default:
		return nil, &exitError{code: 2, err: fmt.Errorf("--log-format: %q is not text or json", format)}
	}
	return log, nil
}

// secondsJSON is logrus's JSON format with every time.Duration field
// written as seconds, a float: the unit of the metrics, and a number log
// pipelines can compare (logrus alone writes nanoseconds). The text format
// keeps Go's form (1.5s).
type secondsJSON struct{ logrus.JSONFormatter }

func (f *secondsJSON) Format(e *logrus.Entry) ([]byte, error) {
	var data logrus.Fields
	for k, v := range e.Data {
		if d, ok := v.(time.Duration); ok {
			if data == nil {
				data = make(logrus.Fields, len(e.Data))
				for k, v := range e.Data {
					data[k] = v
				}
			}
			data[k] = d.Seconds()
		}
	}
	if data != nil {
		c := *e
		c.Data = data
		e = &c
	}
	return f.JSONFormatter.Format(e)
}

func serve(ctx context.Context, c serveConfig) error {
	// SIGHUP's default action ends the process. Take it over before anything
	// that can take a while (the store lock, the runtime), so a reload sent
	// while the proxy starts cannot kill it; one that arrives before the
	// reload loop runs is kept and applied then.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	sampleHeap(c.pprof)
	setProcs(c.procs)

	log, err := newLogger(c.logLevel, c.logFormat)
	if err != nil {
		return err
	}
	if err := checkEndpoints(c); err != nil {
		return err
	}
	rules, err := c.rules.load()
	if err != nil {
		return err
	}

	m := metrics.New()
	reg := metrics.NewRegistry()
	if err := m.Register(reg); err != nil {
		return err
	}
	m.SetRules(metricRules(rules.Config(), c.tagCheck))

	aliases, err := store.Open(filepath.Join(c.stateDir, "aliases.db"),
		store.WithLogger(log), store.WithOnChange(func(n int) { m.Aliases.Set(float64(n)) }))
	if err != nil {
		return err
	}
	defer aliases.Close()
	m.Aliases.Set(float64(aliases.Len()))
	if aliases.MovedAside() != "" {
		m.StoreRecoveries.Inc()
	}
	m.StorePersistent.Set(boolGauge(!aliases.Volatile()))

	warnExposedAuthFile(c.authFile, log)

	conn, err := proxy.DialRuntime(c.runtimeEndpoint)
	if err != nil {
		return err
	}
	defer conn.Close()

	opts := []proxy.Option{
		proxy.WithMetrics(m),
		proxy.WithCredentials(proxy.NewAuthFile(c.authFile)),
		proxy.WithLogger(log),
		proxy.WithAttemptTimeout(c.attemptTimeout),
		proxy.WithStallTimeout(c.stallTimeout),
		proxy.WithCooldown(c.cooldown),
		proxy.WithProbeOverlap(c.probeOverlap),
	}
	if c.probe {
		opts = append(opts, proxy.WithManifestProbe(c.probeTimeout, c.authFile, "cri-mirror-proxy/"+version))
	}
	if c.substitute {
		platform, err := proxy.ParsePlatform(c.platform)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("--platform: %w", err)}
		}
		opts = append(opts,
			proxy.WithDigestSubstitution(c.indexTimeout, c.authFile, "cri-mirror-proxy/"+version),
			proxy.WithIndexDir(c.indexDir), proxy.WithPlatform(platform))
	}
	if len(c.tagCheck.Entries()) > 0 {
		// An empty drop-in directory of our own; if the state directory
		// is read-only it does not exist, which reads the same.
		noRules := filepath.Join(c.stateDir, "no-registries.conf.d")
		_ = os.MkdirAll(noRules, 0o700)
		opts = append(opts, proxy.WithTagCheck(c.tagCheck, c.tagCheckTimeout, c.authFile, "cri-mirror-proxy/"+version, noRules, aliases))
	}
	srv := proxy.New(conn, rules, aliases, opts...)
	gs := srv.NewGRPCServer()

	st := &statusSource{cfg: c, started: time.Now(), rules: rules, aliases: aliases, srv: srv}

	gid, err := lookupGroup(c.listenGroup)
	if err != nil {
		return err
	}
	// Both listeners are bound before the proxy says it serves: a taken
	// metrics port is a failed start, not an exit after "serving".
	var metricsLis net.Listener
	if c.metricsAddress != "" {
		if metricsLis, err = metrics.Listen(c.metricsAddress); err != nil {
			return err
		}
	}
	lis, err := proxy.Listen(c.listen, os.FileMode(c.listenMode), gid)
	if err != nil {
		if metricsLis != nil {
			metricsLis.Close()
		}
		return err
	}
	log.WithFields(logrus.Fields{
		"listen": c.listen, "runtime": c.runtimeEndpoint, "metrics": c.metricsAddress,
		"aliases": aliases.Len(), "version": version, "procs": runtime.GOMAXPROCS(0),
	}).Info("cri-mirror-proxy serving")

	// Under systemd (Type=notify) the unit becomes active only now, with the
	// socket in place: kubelet ordered After= it finds the socket there.
	if ok, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.WithError(err).Warn("cannot notify systemd")
	} else if ok {
		log.Debug("notified systemd: ready")
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := gs.Serve(lis); err != nil {
			return fmt.Errorf("serve %s: %w", c.listen, err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		stopGracefully(gs, c.shutdownTimeout, log)
		return nil
	})
	if metricsLis != nil {
		ready := func(ctx context.Context) error {
			err := srv.Ready(ctx)
			m.RuntimeUp.Set(boolGauge(err == nil))
			return err
		}
		var hopts []metrics.HandlerOption
		if c.pprof {
			hopts = append(hopts, metrics.WithPprof())
		}
		h := withStatus(metrics.NewHandler(reg, ready, hopts...), st)
		g.Go(func() error { return metrics.ServeListener(gctx, metricsLis, h) })
	}
	g.Go(func() error { reloadOnHUP(gctx, hup, rules, c.tagCheck, m, log, st.reloaded); return nil })
	g.Go(func() error { watchRuntime(gctx, srv, m, log); return nil })
	if aliases.Len() == 0 {
		// A first start, or a state directory that was wiped or damaged:
		// what the runtime holds under mirror names tells what was pulled.
		g.Go(func() error { rebuildAliases(gctx, srv, log); return nil })
	}

	err = g.Wait()
	log.Info("cri-mirror-proxy stopped")
	return err
}

// sampleHeap turns the runtime's sampling of allocations for the heap
// profile on (--pprof) or off. Only /debug/pprof/ reads that profile; left
// on without it, the sampling fills the runtime's table of allocation
// stacks, over a megabyte of memory, for no reader.
func sampleHeap(pprof bool) {
	if pprof {
		runtime.MemProfileRate = defaultMemProfileRate
	} else {
		runtime.MemProfileRate = 0
	}
}

// defaultProcs is --procs when it is not set: one, unless GOMAXPROCS is
// set in the environment, which Go has applied already.
//
// One is enough, and faster: the proxy's own work in a call is a few
// microseconds, and the rest is waiting on two sockets. A second thread
// running Go code adds no throughput to that, but a call then wakes it to
// look for work and puts it back to sleep (futex), which costs more than
// the call's own work (test/bench/RESULTS.md: proxy CPU and latency per
// call against the reference hop, one thread and Go's default side by
// side).
func defaultProcs() int {
	if os.Getenv("GOMAXPROCS") != "" {
		return 0
	}
	return 1
}

// setProcs applies --procs: n threads run Go code at once, or Go's own
// choice for 0.
func setProcs(n int) {
	if n > 0 {
		runtime.GOMAXPROCS(n)
	}
}

// defaultMemProfileRate is the runtime's own rate, taken before anything
// changes it.
var defaultMemProfileRate = runtime.MemProfileRate

// stopGracefully lets in-flight calls (pulls included) finish for up to
// timeout, then cuts the rest. Closing the listener removes the socket.
func stopGracefully(gs *grpc.Server, timeout time.Duration, log logrus.FieldLogger) {
	log.WithField("timeout", timeout).Info("stopping: waiting for in-flight calls")
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		log.Warn("in-flight calls did not finish in time; stopping them")
		gs.Stop()
		<-done
	}
}

// reloadOnHUP re-reads the mirror rules on each signal from hup. A broken
// file keeps the old rules serving.
// done learns each outcome (for the status report).
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, rules *resolver.Resolver, tagCheck *resolver.TagCheckPolicy, m *metrics.Metrics, log logrus.FieldLogger, done func(error)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			err := rules.Reload()
			done(err)
			if err != nil {
				m.ConfigReloads.WithLabelValues(metrics.ReloadFailure).Inc()
				log.WithError(err).Error("reload of mirror rules failed; the previous rules stay in force")
				continue
			}
			m.SetRules(metricRules(rules.Config(), tagCheck))
			m.ConfigReloads.WithLabelValues(metrics.ReloadSuccess).Inc()
			log.Info("mirror rules reloaded")
		}
	}
}

// metricRules tells the metrics which registry and mirror labels the rules
// can produce: the proxy labels a pull with its rule's prefix and an attempt
// with the mirror's location, or "source" for the rule's own location; and
// which rules' pulls the tag-check policy can check.
func metricRules(c resolver.Config, tagCheck *resolver.TagCheckPolicy) []metrics.Rule {
	out := make([]metrics.Rule, 0, len(c.Rules))
	for _, r := range c.Rules {
		mr := metrics.Rule{Registry: r.Prefix, Source: !r.Blocked, TagCheck: tagCheck.Overlaps(r.Prefix)}
		for _, mirror := range r.Mirrors {
			mr.Mirrors = append(mr.Mirrors, mirror.Location)
		}
		out = append(out, mr)
	}
	return out
}

// watchRuntime keeps cri_mirror_runtime_up current and logs when the
// runtime goes away or comes back.
func watchRuntime(ctx context.Context, srv *proxy.Server, m *metrics.Metrics, log logrus.FieldLogger) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	up := -1
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := srv.Ready(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		now := 0
		if err == nil {
			now = 1
		}
		m.RuntimeUp.Set(float64(now))
		if now != up {
			if err != nil {
				log.WithError(err).Warn("runtime is not answering")
			} else if up == 0 {
				log.Info("runtime is answering again")
			}
			up = now
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// rebuildAliases runs srv.RebuildAliases once the runtime answers, trying
// every few seconds for a bounded time (the runtime may start after the
// proxy).
func rebuildAliases(ctx context.Context, srv *proxy.Server, log logrus.FieldLogger) {
	const tries, every = 60, 5 * time.Second
	for try := 1; ; try++ {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		restored, ambiguous, err := srv.RebuildAliases(cctx)
		cancel()
		if err == nil {
			log.WithFields(logrus.Fields{"restored": restored, "ambiguous": ambiguous}).Info("alias table rebuilt from the runtime's images")
			return
		}
		if try == tries || ctx.Err() != nil {
			log.WithError(err).Error("cannot rebuild the alias table from the runtime; original names return as images are pulled again")
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// warnExposedAuthFile warns when the auth file holding the mirrors'
// credentials can be read or written by users other than its owner. The
// default search order (path "") is left to containers/image.
func warnExposedAuthFile(path string, log logrus.FieldLogger) {
	if path == "" {
		return
	}
	fi, err := os.Stat(path)
	if err != nil {
		return // no file, no credentials: pulls go anonymous, as documented
	}
	if mode := fi.Mode().Perm(); mode&0o077 != 0 {
		log.WithFields(logrus.Fields{"auth_file": path, "mode": fmt.Sprintf("%04o", mode)}).
			Warn("the auth file can be read or written by other users: the registry credentials in it are exposed (chmod 600 it)")
	}
}

// lookupGroup resolves --listen-group to a group id; "" is -1 (unchanged).
func lookupGroup(name string) (int, error) {
	if name == "" {
		return -1, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		if g, err = user.LookupGroupId(name); err != nil {
			return 0, &exitError{code: 2, err: fmt.Errorf("--listen-group: no group %q", name)}
		}
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("--listen-group: group %q has id %q", name, g.Gid)
	}
	return gid, nil
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
