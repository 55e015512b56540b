//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStatus: `cri-mirror-proxy status` asks the running daemon, on its metrics address, for the
// files and rules it loaded, each mirror's breaker and recency, the alias count and its version,
// and the outcome of the last reload, in front of each runtime.
func TestStatus(t *testing.T) {
	eachRuntime(t, func(t *testing.T, rt *criRuntime) {
		dead := fmt.Sprintf("127.0.0.1:%d/dead", env.closedPort) // refuses connections
		good := env.mirrorLoc("m1")
		p := startProxyWith(t, registriesConf(rule{prefix: sourceHost, mirrors: []mirror{{location: dead}, {location: good}}}),
			proxyOpts{runtime: rt, args: []string{"--mirror-cooldown", "10m"}})
		p.mustPull(sourceHost+"/e2e/status:v1", mustPushRandom(t, env.mirror.host+"/m1/e2e/status:v1"))

		type mirrorState struct {
			Location   string     `json:"location"`
			Rules      []string   `json:"rules"`
			HeldBack   bool       `json:"held_back"`
			HeldUntil  *time.Time `json:"held_until"`
			LastHit    *time.Time `json:"last_hit"`
			ProbeFirst bool       `json:"probe_first"`
		}
		type report struct {
			Version    string `json:"version"`
			Listen     string `json:"listen"`
			RuntimeUp  bool   `json:"runtime_up"`
			Aliases    int    `json:"aliases"`
			Probe      bool   `json:"probe"`
			LastReload *struct {
				Result string `json:"result"`
				Error  string `json:"error"`
			} `json:"last_reload"`
			Registries struct {
				ConfPath string `json:"registries_conf"`
				Rules    []struct {
					Prefix string `json:"prefix"`
				} `json:"rules"`
			} `json:"registries"`
			Mirrors []mirrorState `json:"mirrors"`
		}
		status := func(args ...string) (string, string, error) {
			return run(30*time.Second, p.dir, nil, append([]string{env.proxyBin, "status", "--metrics-address", p.metricsAddr}, args...)...)
		}
		out, errOut, err := status("-o", "json")
		if err != nil {
			t.Fatalf("status -o json: %v\n%s", err, errOut)
		}
		var r report
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("status -o json is not a report: %v\n%s", err, out)
		}
		if r.Version == "" || r.Listen != "unix://"+p.sock || !r.RuntimeUp || r.Aliases != 1 || !r.Probe || r.LastReload != nil {
			t.Errorf("status report %+v", r)
		}
		if r.Registries.ConfPath != p.conf || len(r.Registries.Rules) != 1 || r.Registries.Rules[0].Prefix != sourceHost {
			t.Errorf("status registries %+v, want %s with one rule %s", r.Registries, p.conf, sourceHost)
		}
		if len(r.Mirrors) != 2 {
			t.Fatalf("status mirrors %+v, want 2", r.Mirrors)
		}
		d, g := r.Mirrors[0], r.Mirrors[1]
		if d.Location != dead || !d.HeldBack || d.HeldUntil == nil || time.Until(*d.HeldUntil) < 5*time.Minute || d.LastHit != nil || !d.ProbeFirst {
			t.Errorf("dead mirror %+v: want held back for about 10m, no hit, probe first", d)
		}
		if g.Location != good || g.HeldBack || g.LastHit == nil || g.ProbeFirst || len(g.Rules) != 1 || g.Rules[0] != sourceHost {
			t.Errorf("good mirror %+v: want tried in order, a recent hit, pulled at once", g)
		}

		out, errOut, err = status()
		if err != nil {
			t.Fatalf("status: %v\n%s", err, errOut)
		}
		t.Logf("cri-mirror-proxy status:\n%s", out)
		for _, want := range []string{"cri-mirror-proxy ", "runtime:  unix://", "(answering)", "aliases:  1", p.conf,
			dead + ": HELD BACK for ", good + ": tried in order; last hit "} {
			if !strings.Contains(out, want) {
				t.Errorf("status lacks %q:\n%s", want, out)
			}
		}

		// A refused reload shows, with the file and the problem.
		p.writeConf("[[registry]]\nprefix = \"x.test\"\nlocation = \"x.test\"\nbogus-key = 1\n")
		if err := p.proc.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		err = waitFor(10*time.Second, "the failed reload in the status", func() error {
			out, errOut, err := status("-o", "json")
			if err != nil {
				return fmt.Errorf("%v: %s", err, errOut)
			}
			var r report
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				return err
			}
			if r.LastReload == nil || r.LastReload.Result != "failure" || !strings.Contains(r.LastReload.Error, p.conf) {
				return fmt.Errorf("last_reload %+v", r.LastReload)
			}
			if len(r.Registries.Rules) != 1 || r.Registries.Rules[0].Prefix != sourceHost {
				return fmt.Errorf("rules after a refused reload: %+v", r.Registries.Rules)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}

		// Nothing listens there: a clear error, exit code 1.
		_, errOut, err = run(30*time.Second, p.dir, nil, env.proxyBin, "status", "--metrics-address", env.closedURL()[len("http://"):])
		if err == nil || !strings.Contains(errOut, "is cri-mirror-proxy serving") {
			t.Errorf("status with nothing listening: %v, stderr %q", err, errOut)
		}
	})
}
