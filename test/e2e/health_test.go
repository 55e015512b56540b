//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// TestMirrorHealth: the three ways a first mirror fails (refuses connections, accepts them and
// never answers, lacks the tag) each cost at most one probe, the runtime is not sent there, and
// while the breaker is open the mirror is skipped without a request. A mirror that served a pull
// and then stops answering is probed alongside the runtime's pull, which the probe stops. Each
// case has its own proxy, so one case's breaker does not affect another.
func TestMirrorHealth(t *testing.T) {
	cleanImages(t)
	const (
		attempts = "cri_mirror_pull_attempts_total"
		failures = "cri_mirror_pull_attempt_failures_total"
		healthy  = "cri_mirror_mirror_healthy"
	)
	// Pulls answered by the good mirror; each is a new image, so every pull reaches the runtime.
	pullFromGood := func(t *testing.T, p *proxy, repo string, n int) {
		t.Helper()
		for i := range n {
			path := fmt.Sprintf("%s/%d", repo, i)
			want := mustPushRandom(t, env.mirror.host+"/m2/"+path+":v1")
			p.mustPull(sourceHost+"/"+path+":v1", want)
		}
	}
	// A front whose manifest requests can be made to hang (a black hole) at any time.
	holeFront := func(t *testing.T) (*registryFront, *atomic.Bool) {
		f := newRegistryFront(t, env.mirror.host)
		var hole atomic.Bool
		f.delayFor = func(r *http.Request) time.Duration {
			if hole.Load() {
				return time.Hour // bounded by the request and by the front's close
			}
			return 0
		}
		allowHost(t, env.ctd, f.host, "http://"+f.host)
		return f, &hole
	}
	probeArgs := proxyOpts{args: []string{"--probe-timeout", "1s", "--mirror-cooldown", "10m"}}

	t.Run("black-holed", func(t *testing.T) {
		front, hole := holeFront(t)
		hole.Store(true)
		bad := front.host + "/m1/e2e/health-hole"
		p := startProxyWith(t, registriesConf(rule{prefix: sourceHost + "/e2e/health-hole", mirrors: []mirror{
			{location: bad}, {location: env.mirrorLoc("m2") + "/e2e/health-hole"},
		}}), probeArgs)
		p.t = t
		pullFromGood(t, p, "e2e/health-hole", 1)
		m := p.metrics()
		if n := m.sum(attempts, map[string]string{"mirror": bad, "result": "unreachable"}); n != 1 {
			t.Errorf("unreachable attempts on the black hole = %v, want 1\n%s", n, m.dump("cri_mirror_pull_attempts"))
		}
		if n := m.sum(failures, map[string]string{"mirror": bad, "reason": "timeout"}); n != 1 {
			t.Errorf("timeout failures of the black hole = %v, want 1\n%s", n, m.dump(failures))
		}
		if n := m.sum(healthy, map[string]string{"mirror": bad}); n != 0 {
			t.Errorf("%s{mirror=%q} = %v, want 0", healthy, bad, n)
		}
		seen := len(front.requests())
		if n := front.count(func(r frontRequest) bool { return fromRuntime(r.UserAgent) }); n != 0 {
			t.Errorf("containerd sent %d requests to the black hole; the probe should have kept it away\n%s", n, front.dump(20))
		}

		pullFromGood(t, p, "e2e/health-hole/next", 5)
		m = p.metrics()
		if n := m.sum(attempts, map[string]string{"mirror": bad, "result": "skipped"}); n != 5 {
			t.Errorf("skipped attempts on the held-back black hole = %v, want 5\n%s", n, m.dump("cri_mirror_pull_attempts"))
		}
		if n := len(front.requests()) - seen; n != 0 {
			t.Errorf("the held-back black hole got %d more requests\n%s", n, front.dump(20))
		}
	})

	t.Run("refused", func(t *testing.T) {
		dead := fmt.Sprintf("127.0.0.1:%d/e2e/health-refused", env.closedPort)
		p := startProxyWith(t, registriesConf(rule{prefix: sourceHost + "/e2e/health-refused", mirrors: []mirror{
			{location: dead}, {location: env.mirrorLoc("m2") + "/e2e/health-refused"},
		}}), probeArgs)
		p.t = t
		pullFromGood(t, p, "e2e/health-refused", 4)
		m := p.metrics()
		for result, want := range map[string]float64{"unreachable": 1, "skipped": 3, "error": 0} {
			if n := m.sum(attempts, map[string]string{"mirror": dead, "result": result}); n != want {
				t.Errorf("%s attempts on the refusing mirror = %v, want %v\n%s", result, n, want, m.dump("cri_mirror_pull_attempts"))
			}
		}
		if n := m.sum(failures, map[string]string{"mirror": dead, "reason": "connection"}); n != 1 {
			t.Errorf("connection failures of the refusing mirror = %v, want 1\n%s", n, m.dump(failures))
		}
	})

	t.Run("missing the tag", func(t *testing.T) {
		front, _ := holeFront(t)
		miss := front.host + "/m1/e2e/health-miss"
		conf := registriesConf(rule{prefix: sourceHost + "/e2e/health-miss", mirrors: []mirror{
			{location: miss}, {location: env.mirrorLoc("m2") + "/e2e/health-miss"},
		}})
		// A mirror that has not served a pull is probed first: the runtime never hears of it.
		p := startProxyWith(t, conf, probeArgs)
		p.t = t
		pullFromGood(t, p, "e2e/health-miss", 3)
		m := p.metrics()
		if n := m.sum(attempts, map[string]string{"mirror": miss, "result": "missing"}); n != 3 {
			t.Errorf("missing attempts = %v, want 3 (a cache miss is not a fault: probed every time)\n%s", n, m.dump("cri_mirror_pull_attempts"))
		}
		for _, s := range m {
			if s.name == healthy && s.labels["mirror"] == miss && s.value == 0 {
				t.Errorf("a cache miss marked the mirror unhealthy: %s = 0", healthy)
			}
		}
		if n := front.count(func(r frontRequest) bool { return fromRuntime(r.UserAgent) }); n != 0 {
			t.Errorf("containerd sent %d requests to the mirror without the tag\n%s", n, front.dump(20))
		}
		if n := front.count(func(r frontRequest) bool { return fromProbe(r.UserAgent) && manifestPath.MatchString(r.Path) }); n != 3 {
			t.Errorf("probe manifest requests = %d, want 3\n%s", n, front.dump(20))
		}
	})

	t.Run("stops answering after serving", func(t *testing.T) {
		front, hole := holeFront(t)
		repo := "e2e/health-later"
		flaky := front.host + "/m1/" + repo
		p := startProxyWith(t, registriesConf(rule{prefix: sourceHost + "/" + repo, mirrors: []mirror{
			{location: flaky}, {location: env.mirrorLoc("m2") + "/" + repo},
		}}), probeArgs)
		p.t = t
		first := mustPushRandom(t, env.mirror.host+"/m1/"+repo+"/a:v1")
		p.mustPull(sourceHost+"/"+repo+"/a:v1", first)

		// The mirror just served a pull: the next pull starts at once, and as it does not end
		// within the probe delay, the probe runs alongside it.
		hole.Store(true)
		mustPushRandom(t, env.mirror.host+"/m1/"+repo+"/b:v1")
		want := mustPushRandom(t, env.mirror.host+"/m2/"+repo+"/b:v1")
		p.mustPull(sourceHost+"/"+repo+"/b:v1", want)
		m := p.metrics()
		for result, n := range map[string]float64{"success": 1, "unreachable": 1, "canceled": 0, "error": 0} {
			if got := m.sum(attempts, map[string]string{"mirror": flaky, "result": result}); got != n {
				t.Errorf("%s attempts on the mirror = %v, want %v\n%s", result, got, n, m.dump("cri_mirror_pull_attempts"))
			}
		}
		asked := front.count(func(r frontRequest) bool {
			return fromRuntime(r.UserAgent) && r.Path == "/v2/m1/"+repo+"/b/manifests/v1"
		})
		if asked == 0 {
			t.Errorf("containerd was not asked for b while the probe ran (alongside)\n%s", front.dump(20))
		}
		for mode, n := range map[string]float64{"before": 1, "alongside": 1} {
			if got := m.sum("cri_mirror_probes_total", map[string]string{"mirror": flaky, "mode": mode}); got != n {
				t.Errorf("probes %s = %v, want %v\n%s", mode, got, n, m.dump("cri_mirror_probes"))
			}
		}
		if !hasLogLine(readFile(p.logPath()), "probe_mode=alongside", "result=unreachable") {
			t.Errorf("no log line of the alongside probe stopping the pull")
		}
	})
}
