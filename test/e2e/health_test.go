//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"slices"
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
	eachRuntime(t, func(t *testing.T, rt *criRuntime) {
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
			rt.allowHost(t, f.host, "http://"+f.host)
			return f, &hole
		}
		// A mirror that connects and never answers is given up after the stall window on
		// either runtime: for want of download progress (containerd), or of an answer to the
		// proxy's manifest request (both).
		args := []string{"--probe-timeout", "1s", "--mirror-cooldown", "10m", "--stall-timeout", "3s"}
		probeArgs := proxyOpts{runtime: rt, args: args}
		// A mirror that answers and then trickles its blobs: CRI-O reports no download
		// progress, so only the attempt timeout bounds that attempt there.
		trickleArgs, trickleAbandoned := probeArgs, "stalled"
		if !rt.reportsProgress {
			trickleArgs.args = append(slices.Clone(args), "--attempt-timeout", "5s")
			trickleAbandoned = "timed out"
		}

		t.Run("black-holed", func(t *testing.T) {
			front, hole := holeFront(t)
			hole.Store(true)
			bad := front.host + "/m1/e2e/health-hole"
			p := startProxyWith(t, registriesConf(rule{prefix: sourceHost + "/e2e/health-hole", mirrors: []mirror{
				{location: bad}, {location: env.mirrorLoc("m2") + "/e2e/health-hole"},
			}}), probeArgs)
			p.t = t
			pullFromGood(t, p, "e2e/health-hole", 1)
			// The probe connects and gets no answer: a slow mirror, maybe, so the runtime is sent
			// there; the mirror answers nothing for the stall window and the attempt is abandoned.
			m := p.metrics()
			if n := m.Sum("cri_mirror_probes_total", map[string]string{"mirror": bad, "result": "slow"}); n != 1 {
				t.Errorf("slow probes of the black hole = %v, want 1\n%s", n, m.Dump("cri_mirror_probes"))
			}
			if n := m.Sum(attempts, map[string]string{"mirror": bad, "result": "timeout"}); n != 1 {
				t.Errorf("timed out attempts on the black hole = %v, want 1\n%s", n, m.Dump("cri_mirror_pull_attempts"))
			}
			if n := m.Sum(failures, map[string]string{"mirror": bad, "reason": "timeout"}); n != 1 {
				t.Errorf("timeout failures of the black hole = %v, want 1\n%s", n, m.Dump(failures))
			}
			if n := m.Sum(healthy, map[string]string{"mirror": bad}); n != 0 {
				t.Errorf("%s{mirror=%q} = %v, want 0", healthy, bad, n)
			}
			if !hasLogLine(readFile(p.logPath()), "result=timeout", "stalled") {
				t.Errorf("no log line saying the attempt stalled")
			}
			seen := len(front.requests())
			pullFromGood(t, p, "e2e/health-hole/next", 5)
			m = p.metrics()
			if n := m.Sum(attempts, map[string]string{"mirror": bad, "result": "skipped"}); n != 5 {
				t.Errorf("skipped attempts on the held-back black hole = %v, want 5\n%s", n, m.Dump("cri_mirror_pull_attempts"))
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
				if n := m.Sum(attempts, map[string]string{"mirror": dead, "result": result}); n != want {
					t.Errorf("%s attempts on the refusing mirror = %v, want %v\n%s", result, n, want, m.Dump("cri_mirror_pull_attempts"))
				}
			}
			if n := m.Sum(failures, map[string]string{"mirror": dead, "reason": "connection"}); n != 1 {
				t.Errorf("connection failures of the refusing mirror = %v, want 1\n%s", n, m.Dump(failures))
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
			if n := m.Sum(attempts, map[string]string{"mirror": miss, "result": "missing"}); n != 3 {
				t.Errorf("missing attempts = %v, want 3 (a cache miss is not a fault: probed every time)\n%s", n, m.Dump("cri_mirror_pull_attempts"))
			}
			for _, s := range m {
				if s.Name == healthy && s.Labels["mirror"] == miss && s.Value == 0 {
					t.Errorf("a cache miss marked the mirror unhealthy: %s = 0", healthy)
				}
			}
			if n := front.count(func(r frontRequest) bool { return rt.fromRuntime(r.UserAgent) }); n != 0 {
				t.Errorf("%s sent %d requests to the mirror without the tag\n%s", rt.name, n, front.dump(20))
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
			before := len(front.requests())
			p.mustPull(sourceHost+"/"+repo+"/b:v1", want)
			m := p.metrics()
			// The alongside probe finds the mirror slow, not dead, and lets the pull go on; the
			// mirror answers nothing for the stall window and the pull is abandoned.
			for result, n := range map[string]float64{"success": 1, "timeout": 1, "unreachable": 0, "canceled": 0, "error": 0} {
				if got := m.Sum(attempts, map[string]string{"mirror": flaky, "result": result}); got != n {
					t.Errorf("%s attempts on the mirror = %v, want %v\n%s", result, got, n, m.Dump("cri_mirror_pull_attempts"))
				}
			}
			// The runtime reached the mirror (containerd asks for b's manifest at once; CRI-O
			// first pings /v2/, which the black hole holds).
			asked := 0
			for _, r := range front.requests()[before:] {
				if rt.fromRuntime(r.UserAgent) {
					asked++
				}
			}
			if asked == 0 {
				t.Errorf("%s was not asked for b while the probe ran (alongside)\n%s", rt.name, front.dump(20))
			}
			for mode, n := range map[string]float64{"before": 1, "alongside": 1} {
				if got := m.Sum("cri_mirror_probes_total", map[string]string{"mirror": flaky, "mode": mode}); got != n {
					t.Errorf("probes %s = %v, want %v\n%s", mode, got, n, m.Dump("cri_mirror_probes"))
				}
			}
			if !hasLogLine(readFile(p.logPath()), "probe_mode=alongside", "result=timeout") {
				t.Errorf("no log line of the stalled alongside pull")
			}
		})

		t.Run("slow cache", func(t *testing.T) {
			// A pull-through cache answers HEAD for a cold repository after 2s, over the 1s probe
			// timeout: slow, not dead. The pull is served there and the mirror stays healthy.
			f := newRegistryFront(t, env.mirror.host)
			f.delayFor = func(r *http.Request) time.Duration {
				if r.Method == http.MethodHead && isManifest(r) {
					return 2 * time.Second
				}
				return 0
			}
			rt.allowHost(t, f.host, "http://"+f.host)
			repo := "e2e/health-slow"
			slow := f.host + "/m1/" + repo
			p := startProxyWith(t, registriesConf(rule{prefix: sourceHost + "/" + repo, mirrors: []mirror{
				{location: slow}, {location: env.mirrorLoc("m2") + "/" + repo},
			}}), probeArgs)
			p.t = t
			want := mustPushRandom(t, env.mirror.host+"/m1/"+repo+"/a:v1")
			p.mustPull(sourceHost+"/"+repo+"/a:v1", want)
			m := p.metrics()
			if n := m.Sum("cri_mirror_probes_total", map[string]string{"mirror": slow, "result": "slow"}); n != 1 {
				t.Errorf("slow probes = %v, want 1\n%s", n, m.Dump("cri_mirror_probes"))
			}
			if n := m.Sum(attempts, map[string]string{"mirror": slow, "result": "success"}); n != 1 {
				t.Errorf("successful attempts on the slow cache = %v, want 1\n%s", n, m.Dump("cri_mirror_pull_attempts"))
			}
			if n := m.Sum(failures, map[string]string{"mirror": slow}); n != 0 {
				t.Errorf("failures of the slow cache = %v, want 0\n%s", n, m.Dump(failures))
			}
		})

		t.Run("trickling blobs", func(t *testing.T) {
			// A mirror that sends its blobs at 4 bytes a second: the pull moves bytes, far too few,
			// and is abandoned after the stall window for the next mirror, which has the image.
			f := newRegistryFront(t, env.mirror.host)
			f.faultFor = func(r *http.Request) fault {
				if isBlob(r) {
					return faultTrickle
				}
				return faultNone
			}
			rt.allowHost(t, f.host, "http://"+f.host)
			repo := "e2e/health-trickle"
			trickle := f.host + "/m1/" + repo
			p := startProxyWith(t, registriesConf(rule{prefix: sourceHost + "/" + repo, mirrors: []mirror{
				{location: trickle}, {location: env.mirrorLoc("m2") + "/" + repo},
			}}), trickleArgs)
			p.t = t
			img := mustPushRandom(t, env.mirror.host+"/m1/"+repo+"/a:v1", env.mirror.host+"/m2/"+repo+"/a:v1")
			start := time.Now()
			p.mustPull(sourceHost+"/"+repo+"/a:v1", img)
			m := p.metrics()
			if n := m.Sum(attempts, map[string]string{"mirror": trickle, "result": "timeout"}); n != 1 {
				t.Errorf("timed out attempts on the trickling mirror = %v, want 1\n%s", n, m.Dump("cri_mirror_pull_attempts"))
			}
			if n := f.count(func(r frontRequest) bool { return rt.fromRuntime(r.UserAgent) && blobPath.MatchString(r.Path) }); n == 0 {
				t.Errorf("%s fetched no blob from the trickling mirror\n%s", rt.name, f.dump(20))
			}
			if !hasLogLine(readFile(p.logPath()), "result=timeout", trickleAbandoned) {
				t.Errorf("no log line saying the attempt %s", trickleAbandoned)
			}
			t.Logf("served by the next mirror after %s", time.Since(start).Round(100*time.Millisecond))
		})
	})
}
