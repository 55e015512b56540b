package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/proxy"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
)

// The running daemon answers GET /status on its metrics address with a
// daemonStatus in JSON, and `cri-mirror-proxy status` asks for it. It is
// served on the metrics mux (not through CRI, e.g. a section of crictl info)
// because that works whatever endpoints kubelet and crictl point at, needs
// no decoding of RuntimeService calls, and sits beside /metrics and /readyz,
// which an operator already reaches. Only loopback clients get an answer:
// the rules name internal hosts, and a metrics address may be open to the
// network for scraping.

// daemonStatus is the report of a running daemon.
type daemonStatus struct {
	Version       string    `json:"version"`
	StartedAt     time.Time `json:"started_at"`
	UptimeSeconds float64   `json:"uptime_seconds"`

	Listen          string `json:"listen"`
	RuntimeEndpoint string `json:"runtime_endpoint"`
	// RuntimeUp: the runtime's image service answered this request's check;
	// RuntimeError says why not.
	RuntimeUp    bool   `json:"runtime_up"`
	RuntimeError string `json:"runtime_error,omitempty"`
	StateDir     string `json:"state_dir"`
	Aliases      int    `json:"aliases"`

	Probe                 bool    `json:"probe"`
	ProbeTimeoutSeconds   float64 `json:"probe_timeout_seconds"`
	ProbeOverlapSeconds   float64 `json:"probe_overlap_seconds"`
	MirrorCooldownSeconds float64 `json:"mirror_cooldown_seconds"`
	AttemptTimeoutSeconds float64 `json:"attempt_timeout_seconds"`

	// LastReload is the last SIGHUP reload, nil before the first.
	LastReload *reloadStatus `json:"last_reload,omitempty"`
	// Registries are the files and rules in effect.
	Registries resolver.Config `json:"registries"`
	// Mirrors are the mirrors the rules name, each once, with the pull
	// path's state.
	Mirrors []mirrorStatus `json:"mirrors"`
}

type reloadStatus struct {
	At     time.Time `json:"at"`
	Result string    `json:"result"` // success or failure
	Error  string    `json:"error,omitempty"`
}

type mirrorStatus struct {
	Location string   `json:"location"`
	Rules    []string `json:"rules"` // prefixes of the rules naming it
	// HeldBack: the breaker holds it back until HeldUntil after a failure
	// (or a trial pull is in flight).
	HeldBack  bool       `json:"held_back"`
	HeldUntil *time.Time `json:"held_until,omitempty"`
	Trial     bool       `json:"trial"`
	// LastHit: when it last served a pull or its probe found the manifest,
	// with no miss or failure since.
	LastHit *time.Time `json:"last_hit,omitempty"`
	// ProbeFirst: the next pull from it is probed before the runtime pulls.
	ProbeFirst bool `json:"probe_first"`
}

// statusSource gathers a daemonStatus from the parts of a running daemon.
type statusSource struct {
	cfg     serveConfig
	started time.Time
	rules   *resolver.Resolver
	aliases interface{ Len() int }
	srv     *proxy.Server

	mu         sync.Mutex
	lastReload *reloadStatus
}

// reloaded records the outcome of a reload.
func (s *statusSource) reloaded(err error) {
	r := &reloadStatus{At: time.Now().UTC(), Result: "success"}
	if err != nil {
		r.Result, r.Error = "failure", err.Error()
	}
	s.mu.Lock()
	s.lastReload = r
	s.mu.Unlock()
}

func (s *statusSource) report(ctx context.Context) daemonStatus {
	c := s.cfg
	st := daemonStatus{
		Version:               version,
		StartedAt:             s.started.UTC(),
		UptimeSeconds:         time.Since(s.started).Seconds(),
		Listen:                c.listen,
		RuntimeEndpoint:       c.runtimeEndpoint,
		StateDir:              c.stateDir,
		Aliases:               s.aliases.Len(),
		Probe:                 c.probe,
		ProbeTimeoutSeconds:   c.probeTimeout.Seconds(),
		ProbeOverlapSeconds:   c.probeOverlap.Seconds(),
		MirrorCooldownSeconds: c.cooldown.Seconds(),
		AttemptTimeoutSeconds: c.attemptTimeout.Seconds(),
		Registries:            s.rules.Config(),
		Mirrors:               []mirrorStatus{},
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := s.srv.Ready(rctx); err != nil {
		st.RuntimeError = err.Error()
	} else {
		st.RuntimeUp = true
	}
	s.mu.Lock()
	st.LastReload = s.lastReload
	s.mu.Unlock()

	index := map[string]int{}
	for _, r := range st.Registries.Rules {
		for _, m := range r.Mirrors {
			i, ok := index[m.Location]
			if !ok {
				i = len(st.Mirrors)
				index[m.Location] = i
				st.Mirrors = append(st.Mirrors, mirrorStatus{Location: m.Location})
			}
			st.Mirrors[i].Rules = append(st.Mirrors[i].Rules, r.Prefix)
		}
	}
	for i := range st.Mirrors {
		ms := &st.Mirrors[i]
		ps := s.srv.MirrorState(ms.Location)
		ms.HeldBack, ms.Trial, ms.ProbeFirst = ps.HeldBack, ps.Trial, ps.ProbeFirst
		if ps.HeldBack {
			t := ps.HeldUntil.UTC()
			ms.HeldUntil = &t
		}
		if !ps.LastHit.IsZero() {
			t := ps.LastHit.UTC()
			ms.LastHit = &t
		}
	}
	return st
}

// ServeHTTP answers GET /status for loopback clients.
func (s *statusSource) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !isLoopback(r.RemoteAddr) {
		http.Error(w, "status is only served to loopback clients", http.StatusForbidden)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = writeJSON(w, s.report(r.Context()))
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// withStatus serves /status from src and everything else from h.
func withStatus(h http.Handler, src http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/status", src)
	mux.Handle("/", h)
	return mux
}

// statusURL is where the daemon serving on metricsAddress answers /status:
// a wildcard or empty host is asked on loopback.
func statusURL(metricsAddress string) (string, error) {
	if metricsAddress == "" {
		return "", &exitError{code: 2, err: fmt.Errorf("status: --metrics-address is empty: the daemon serves its status there")}
	}
	host, port, err := net.SplitHostPort(metricsAddress)
	if err != nil {
		return "", &exitError{code: 2, err: fmt.Errorf("status: --metrics-address %q: %w", metricsAddress, err)}
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return "http://" + net.JoinHostPort(host, port) + "/status", nil
}

// status asks the running daemon for its report and prints it.
func status(ctx context.Context, c serveConfig, stdout io.Writer) error {
	url, err := statusURL(c.metricsAddress)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("status: is cri-mirror-proxy serving with --metrics-address %s? %w", c.metricsAddress, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("status: read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status: %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	var st daemonStatus
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("status: %s did not answer with a status report: %w", url, err)
	}
	if c.output == "json" {
		return writeJSON(stdout, st)
	}
	printStatus(stdout, st, time.Now())
	return nil
}

// printStatus writes the report for people.
func printStatus(w io.Writer, st daemonStatus, now time.Time) {
	up := time.Duration(st.UptimeSeconds * float64(time.Second)).Round(time.Second)
	fmt.Fprintf(w, "cri-mirror-proxy %s, up %s (since %s)\n", st.Version, up, st.StartedAt.Format(time.RFC3339))
	fmt.Fprintf(w, "serving:  %s\n", st.Listen)
	runtime := "answering"
	if !st.RuntimeUp {
		runtime = "NOT answering: " + st.RuntimeError
	}
	fmt.Fprintf(w, "runtime:  %s (%s)\n", st.RuntimeEndpoint, runtime)
	fmt.Fprintf(w, "aliases:  %d (in %s)\n", st.Aliases, st.StateDir)
	probe := "off"
	if st.Probe {
		probe = fmt.Sprintf("on, timeout %s, alongside within %s of a hit", seconds(st.ProbeTimeoutSeconds), seconds(st.ProbeOverlapSeconds))
	}
	fmt.Fprintf(w, "probe:    %s; a failed mirror is held back %s\n", probe, seconds(st.MirrorCooldownSeconds))

	rc := st.Registries
	missing := ""
	if rc.ConfMissing {
		missing = " (missing: no rules from it)"
	}
	fmt.Fprintf(w, "\nregistries.conf: %s%s\n", rc.ConfPath, missing)
	fmt.Fprintf(w, "drop-in directory: %s (%d file(s))\n", rc.ConfDir, len(rc.DropIns))
	for _, f := range rc.DropIns {
		fmt.Fprintf(w, "  %s\n", f)
	}
	if r := st.LastReload; r != nil {
		fmt.Fprintf(w, "last reload: %s at %s", r.Result, r.At.Format(time.RFC3339))
		if r.Error != "" {
			fmt.Fprintf(w, ": %s (the rules before it stay in force)", r.Error)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "%d rule(s):\n", len(rc.Rules))
	for _, r := range rc.Rules {
		var mirrors []string
		for _, m := range r.Mirrors {
			mirrors = append(mirrors, m.Location)
		}
		source := "then the source " + r.Location
		switch {
		case r.NeverContactSource:
			source = "never the source"
		case r.Blocked:
			source = "blocked"
		case r.Location == "":
			source = "then the image's own host"
		}
		fmt.Fprintf(w, "  %s: %s", r.Prefix, strings.Join(mirrors, ", "))
		if len(mirrors) > 0 {
			fmt.Fprint(w, "; ")
		}
		fmt.Fprintln(w, source)
	}
	fmt.Fprintf(w, "\n%d mirror(s):\n", len(st.Mirrors))
	for _, m := range st.Mirrors {
		state := "tried in order"
		switch {
		case m.Trial:
			state = "held back, one trial pull in flight"
		case m.HeldBack && m.HeldUntil != nil:
			state = fmt.Sprintf("HELD BACK for %s more", m.HeldUntil.Sub(now).Round(time.Second))
		}
		hit := "no recent hit"
		if m.LastHit != nil {
			hit = fmt.Sprintf("last hit %s ago", now.Sub(*m.LastHit).Round(time.Second))
		}
		next := "next pull at once, probed alongside"
		if m.ProbeFirst {
			next = "next pull probed first"
		} else if !st.Probe {
			next = "no probe"
		}
		fmt.Fprintf(w, "  %s: %s; %s; %s (rules: %s)\n", m.Location, state, hit, next, strings.Join(slices.Compact(m.Rules), ", "))
	}
}

func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).String()
}
