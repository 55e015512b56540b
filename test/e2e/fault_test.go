//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// failFast is how long a call may take to fail while the runtime is down: far below kubelet's
// 2-minute runtime timeout, and far above what a refused unix socket costs.
const failFast = 5 * time.Second

// TestRuntimeStops (issue 4 item 1): a second runtime of the test's own, of each kind, is
// stopped under a running proxy. Calls fail fast with Unavailable, /readyz turns 503, and when
// the runtime is back the same proxy process serves again, with mirrors not held back for the
// outage.
func TestRuntimeStops(t *testing.T) {
	eachRuntime(t, func(t *testing.T, shared *criRuntime) {
		dir := filepath.Join(env.dir, "own-"+shared.name)
		rt, stop, err := shared.another(dir)
		if err != nil {
			t.Fatalf("starting a second %s: %v", shared.name, err)
		}
		t.Cleanup(func() {
			stop()
			os.RemoveAll(dir)
		})
		// Images of this test's own: the fixtures' registry logs are counted by other tests.
		want := mustPushRandom(t, env.mirror.host+"/m1/e2e/outage:v1")
		mustPushRandom(t, env.source.host+"/e2e/outage:v1")
		later := mustPushRandom(t, env.mirror.host+"/m1/e2e/outage/later:v1")
		mustPushRandom(t, env.source.host+"/e2e/outage/later:v1")
		p := startProxyWith(t, registriesConf(rule{prefix: sourceHost + "/e2e/outage", mirrors: []mirror{{location: env.mirrorLoc("m1") + "/e2e/outage"}}}),
			proxyOpts{runtime: rt})
		pid := p.proc.cmd.Process.Pid

		ref := sourceHost + "/e2e/outage:v1"
		laterRef := sourceHost + "/e2e/outage/later:v1"
		p.mustPull(ref, want)

		stop()

		// Every kind of call fails with Unavailable, quickly. The deadline is generous: a call
		// that waited for the runtime would run into it and fail with DeadlineExceeded instead.
		calls := []struct {
			name string
			call func(context.Context) error
		}{
			{"ImageStatus", func(ctx context.Context) error {
				_, err := p.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
				return err
			}},
			{"ListImages", func(ctx context.Context) error {
				_, err := p.img.ListImages(ctx, &runtimeapi.ListImagesRequest{})
				return err
			}},
			{"ImageFsInfo", func(ctx context.Context) error {
				_, err := p.img.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
				return err
			}},
			{"RuntimeService.Version (relayed)", func(ctx context.Context) error {
				_, err := p.rt.Version(ctx, &runtimeapi.VersionRequest{})
				return err
			}},
			{"PullImage", func(ctx context.Context) error {
				_, err := p.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: laterRef}})
				return err
			}},
		}
		for _, c := range calls {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			start := time.Now()
			err := c.call(ctx)
			d := time.Since(start)
			cancel()
			switch {
			case err == nil:
				t.Errorf("%s through the proxy succeeded with the runtime stopped", c.name)
			case status.Code(err) != codes.Unavailable:
				t.Errorf("%s with the runtime stopped: %s; want code Unavailable", c.name, grpcMessage(err))
			}
			if d > failFast {
				t.Errorf("%s with the runtime stopped took %s to fail; want under %s (fail fast, not hang)", c.name, d.Round(time.Millisecond), failFast)
			}
		}
		start := time.Now()
		code, body, err := p.statusOf("/readyz")
		if err != nil || code != http.StatusServiceUnavailable {
			t.Errorf("/readyz with the runtime stopped: %d %q, %v; want 503", code, body, err)
		}
		if d := time.Since(start); d > failFast {
			t.Errorf("/readyz with the runtime stopped took %s", d)
		}
		if code, _, _ := p.statusOf("/healthz"); code != http.StatusOK {
			t.Errorf("/healthz with the runtime stopped: %d, want 200 (the proxy itself is alive)", code)
		}
		if n := p.metrics().Sum("cri_mirror_runtime_up", nil); n != 0 {
			t.Errorf("cri_mirror_runtime_up = %v with the runtime stopped, want 0", n)
		}

		// The runtime comes back on the same socket: the same proxy process serves again.
		if rt, stop, err = shared.another(dir); err != nil {
			t.Fatalf("restarting the second %s: %v", shared.name, err)
		}
		// The bound is CRI-O's own start-up bound (startCRIO): under load a restarted CRI-O
		// has answered its first client while it still resets others for a while.
		back := time.Now()
		err = waitFor(60*time.Second, "the proxy to serve again", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			resp, err := p.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
			if err != nil {
				return err
			}
			if resp.GetImage().GetId() != rt.id(want) {
				return fmt.Errorf("ImageStatus(%s) = %v, want id %s", ref, resp.GetImage(), rt.id(want))
			}
			if code, body, err := p.statusOf("/readyz"); err != nil || code != http.StatusOK {
				return fmt.Errorf("/readyz: %d %q %v", code, body, err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("after %s came back: %v", rt.name, err)
		}
		t.Logf("the proxy served again %s after %s answered", time.Since(back).Round(10*time.Millisecond), rt.name)
		if p.proc.cmd.Process.Pid != pid || !p.proc.running() {
			t.Fatalf("the proxy process changed or exited: %s", p.proc.exitState())
		}
		// The pull that failed during the outage failed because of the runtime, not the mirror:
		// the mirror must still be first in line.
		if id, err := p.pull(laterRef); err != nil || id != rt.id(later) {
			t.Errorf("PullImage(%s) after the outage = %q, %v; want %s from the mirror: the pull that failed during the outage failed for want of the runtime, which must not hold the mirror back (circuit breaker)\nattempts:\n%s",
				laterRef, id, err, rt.id(later), p.attemptLog())
		}
		checkNames(t, "ImageStatus after the outage", p.status(ref), []string{ref}, want.Digest)
	})
}

// TestSigkillDuringPulls (item 2): the proxy is killed with SIGKILL while 60 pulls through a
// mirror are in flight. Restarted on the same state dir and socket, it starts (the stale socket
// is no obstacle, the alias store opens), and every pull that had returned success answers
// ImageStatus under its original name with the same id.
func TestSigkillDuringPulls(t *testing.T) {
	cleanImages(t)
	n, rounds := 60, 1
	if soak {
		n, rounds = 120, 5
	}
	// The blobs come through a front that delays each by 0-1.5s (by its digest), so the pulls
	// finish spread out and many are in flight at the kill.
	front := newRegistryFront(t, env.mirror.host)
	front.delayFor = func(r *http.Request) time.Duration {
		if !isBlob(r) {
			return 0
		}
		h := fnv.New32a()
		h.Write([]byte(r.URL.Path))
		return time.Duration(h.Sum32()%16) * 100 * time.Millisecond
	}
	allowHost(t, env.ctd, front.host, "http://"+front.host)
	p := startProxy(t, registriesConf(rule{prefix: sourceHost + "/e2e/kill", mirrors: []mirror{{location: front.host + "/m1/e2e/kill"}}}))

	for round := range rounds {
		imgs := pushMany(t, n, func(i int) string { return fmt.Sprintf("%s/m1/e2e/kill:r%d-%d", env.mirror.host, round, i) })
		original := func(i int) string { return fmt.Sprintf("%s/e2e/kill:r%d-%d", sourceHost, round, i) }

		type result struct {
			id  string
			err error
		}
		results := make([]result, n)
		var succeeded, returned atomic.Int32
		var wg sync.WaitGroup
		img := p.img
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer returned.Add(1)
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				resp, err := img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: original(i)}})
				results[i] = result{resp.GetImageRef(), err}
				if err == nil {
					succeeded.Add(1)
				}
			}()
		}
		err := waitFor(60*time.Second, "a third of the pulls to succeed", func() error {
			if s := succeeded.Load(); int(s) < n/3 {
				return fmt.Errorf("%d succeeded, %d returned", s, returned.Load())
			}
			return nil
		})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		inFlight := n - int(returned.Load())
		p.kill9()
		if !waitGroupWithin(&wg, 30*time.Second) {
			t.Fatalf("round %d: pulls still hanging 30s after the proxy was killed", round)
		}
		if inFlight == 0 {
			t.Fatalf("round %d: every pull had returned before the kill; the test did not kill the proxy mid-pull", round)
		}
		t.Logf("round %d: killed with %d of %d pulls in flight; %d had succeeded", round, inFlight, n, succeeded.Load())

		fi, err := os.Lstat(p.sock)
		if err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Fatalf("round %d: after SIGKILL the socket %s should be left behind (stale): %v", round, p.sock, err)
		}
		p.start() // fails the test unless it serves (and /readyz is 200) within 30s
		if n := p.metrics().Sum("cri_mirror_aliases", nil); int(n) < int(succeeded.Load()) {
			t.Errorf("round %d: after restart cri_mirror_aliases = %v, but %d pulls had returned success", round, n, succeeded.Load())
		}

		for i, r := range results {
			if r.err != nil {
				if _, ok := status.FromError(r.err); !ok {
					t.Errorf("round %d: pull %d failed with a non-gRPC error: %v", round, i, r.err)
				}
				continue
			}
			if r.id != imgs[i].ID {
				t.Errorf("round %d: PullImage(%s) returned %s, want %s", round, original(i), r.id, imgs[i].ID)
				continue
			}
			img := p.status(original(i))
			if img == nil {
				t.Errorf("round %d: after restart ImageStatus(%s) = not found; the pull had returned %s before the kill", round, original(i), r.id)
				continue
			}
			if img.GetId() != r.id {
				t.Errorf("round %d: after restart ImageStatus(%s) = %s, want %s", round, original(i), img.GetId(), r.id)
			}
			checkNoMirrorName(t, "ImageStatus after restart", img)
		}
		// The restarted proxy pulls normally, also what was cut off by the kill.
		for i, r := range results {
			if r.err != nil {
				p.mustPull(original(i), imgs[i])
				break
			}
		}
	}
}

func waitGroupWithin(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// TestReloadDuringPull (item 3, beyond TestReload): SIGHUP with a broken file, then with a
// valid one, while a pull is in flight: the pull completes from the mirror it started on, the
// failure is logged with the file's name and counted, and new pulls follow the new rules.
func TestReloadDuringPull(t *testing.T) {
	cleanImages(t)
	ref := sourceHost + "/e2e/reload-inflight:v1"
	first := mustPushRandom(t, env.mirror.host+"/m1/e2e/reload-inflight:v1")
	second := mustPushRandom(t, env.mirror.host+"/m2/e2e/reload-inflight:v1")
	front := newRegistryFront(t, env.mirror.host)
	front.delayFor = func(r *http.Request) time.Duration {
		if isBlob(r) && r.Method == http.MethodGet {
			return 3 * time.Second
		}
		return 0
	}
	allowHost(t, env.ctd, front.host, "http://"+front.host)
	p := startProxy(t, registriesConf(rule{prefix: sourceHost, mirrors: []mirror{{location: front.host + "/m1"}}}))

	type result struct {
		id  string
		err error
	}
	done := make(chan result, 1)
	go func() {
		id, err := p.pull(ref)
		done <- result{id, err}
	}()
	err := waitFor(30*time.Second, "containerd to fetch a blob through the slow mirror", func() error {
		if front.count(func(r frontRequest) bool { return fromRuntime(r.UserAgent) && blobPath.MatchString(r.Path) }) == 0 {
			return errors.New("no blob request yet")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\nrequests:\n%s", err, front.dump(20))
	}

	const reloads = "cri_mirror_config_reloads_total"
	before := p.metrics()
	p.writeConf("[[registry]]\nprefix = \"source.test\"\nlocation = \"source.test\"\n[[registry.mirror]]\nlocation = \"127.0.0.1/Upper\"\nbogus-key = 1\n")
	if err := p.proc.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	err = waitFor(10*time.Second, "the failed reload to be counted", func() error {
		if d := p.metrics().Failed(reloads, nil) - before.Failed(reloads, nil); d < 1 {
			return fmt.Errorf("%s (results other than success) grew by %v", reloads, d)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if log := readFile(p.logPath()); !hasLogLine(log, "level=error", "reload", p.conf) {
		t.Errorf("no error logged for the failed reload naming %s; log tail:\n%s", p.conf, logTail(p.logPath(), 20))
	}
	p.reload(registriesConf(rule{prefix: sourceHost, mirrors: []mirror{{location: env.mirrorLoc("m2")}}}))

	select {
	case r := <-done:
		t.Fatalf("the pull returned (%q, %v) before both reloads were done; the mirror delay is too short for this test", r.id, r.err)
	default:
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the in-flight pull did not return within 2 minutes of the reloads")
	}
	if r.err != nil {
		t.Fatalf("the pull in flight during the reloads failed: %s", grpcMessage(r.err))
	}
	if r.id != first.ID {
		t.Fatalf("the pull in flight during the reloads returned %s, want %s (from the mirror of the old rules)", r.id, first.ID)
	}
	checkNames(t, "ImageStatus of the pull in flight during the reloads", p.status(ref), []string{ref}, first.Digest)

	if err := p.remove(ref); err != nil {
		t.Fatalf("RemoveImage(%s): %v", ref, err)
	}
	p.mustPull(ref, second)
	checkNames(t, "ImageStatus after the reload", p.status(ref), []string{ref}, second.Digest)
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// hasLogLine reports whether some line of log contains every one of parts.
func hasLogLine(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		ok := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// TestFaultyMirror (item 4): the first mirror is a front to the mirror registry that breaks
// responses; the second is good. The pull is served by the second, the first mirror's attempt
// is counted with a result other than success, and no alias points at the broken mirror's
// image. Each case has its own proxy, so the circuit breaker of one does not affect another.
func TestFaultyMirror(t *testing.T) {
	eachRuntime(t, func(t *testing.T, rt *criRuntime) {
		// A tampered manifest pulled by tag: containerd checks it against the digest the
		// registry announced; CRI-O takes the bytes it got and fails on a blob they name
		// that the registry does not have.
		tamperedManifest := "bad_content"
		if !rt.checksTagManifest {
			tamperedManifest = "other"
		}
		cases := []struct {
			name   string
			reason string // cri_mirror_pull_attempt_failures_total reason of the faulty mirror's attempt
			fault  func(r *http.Request) fault
		}{
			{"manifests answer 500", "server_error", func(r *http.Request) fault {
				if isManifest(r) {
					return faultStatus500
				}
				return faultNone
			}},
			{"connection closed mid-blob", "connection", func(r *http.Request) fault {
				if isBlob(r) && r.Method == http.MethodGet {
					return faultCutBody
				}
				return faultNone
			}},
			{"manifest bytes do not match the digest", tamperedManifest, func(r *http.Request) fault {
				if isManifest(r) && r.Method == http.MethodGet {
					return faultTamper
				}
				return faultNone
			}},
			{"blob bytes do not match the digest", "bad_content", func(r *http.Request) fault {
				if isBlob(r) && r.Method == http.MethodGet {
					return faultTamper
				}
				return faultNone
			}},
			{"connection closed without an answer", "connection", func(r *http.Request) fault {
				if isManifest(r) {
					return faultCloseNoReply
				}
				return faultNone
			}},
		}
		const attempts = "cri_mirror_pull_attempts_total"
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				repo := fmt.Sprintf("e2e/fault-%d", i)
				bad := mustPushRandom(t, env.mirror.host+"/m1/"+repo+":v1")
				good := mustPushRandom(t, env.mirror.host+"/m2/"+repo+":v1")
				front := newRegistryFront(t, env.mirror.host)
				front.faultFor = tc.fault
				rt.allowHost(t, front.host, "http://"+front.host)
				faulty, goodLoc := front.host+"/m1/"+repo, env.mirrorLoc("m2")+"/"+repo
				p := startProxyOn(t, rt, registriesConf(rule{prefix: sourceHost + "/" + repo, mirrors: []mirror{{location: faulty}, {location: goodLoc}}}))
				p.t = t
				ref := sourceHost + "/" + repo + ":v1"

				id, err := p.pull(ref)
				if err != nil {
					t.Fatalf("PullImage(%s): %s; want it served by the second mirror\nfaulty mirror requests:\n%s", ref, grpcMessage(err), front.dump(30))
				}
				if id != rt.id(good) {
					t.Fatalf("PullImage(%s) = %s, want %s (the good mirror's image); the faulty mirror's is %s\n%s", ref, id, rt.id(good), rt.id(bad), front.dump(30))
				}
				checkNames(t, "ImageStatus(original)", p.status(ref), []string{ref}, good.Digest)
				if rt.has(t, rt.id(bad)) {
					t.Errorf("%s has the faulty mirror's image %s", rt.name, rt.id(bad))
				}
				for _, img := range p.list() {
					if img.GetId() == rt.id(bad) {
						t.Errorf("ListImages through the proxy shows the faulty mirror's image %s as %q", rt.id(bad), img.GetRepoTags())
					}
					for _, n := range append(img.GetRepoTags(), img.GetRepoDigests()...) {
						if strings.Contains(n, front.host) {
							t.Errorf("ListImages through the proxy shows a name of the faulty mirror: %s", n)
						}
					}
				}

				m := p.metrics()
				if n := m.Failed(attempts, map[string]string{"mirror": faulty}); n < 1 {
					t.Errorf("no attempt on the faulty mirror counted with a result other than success\n%s", m.Dump("cri_mirror_pull_attempts"))
				}
				if n := m.Sum(attempts, map[string]string{"mirror": faulty, "result": "success"}); n != 0 {
					t.Errorf("%v attempts on the faulty mirror counted as success\n%s", n, m.Dump("cri_mirror_pull_attempts"))
				}
				if n := m.Sum(attempts, map[string]string{"mirror": goodLoc, "result": "success"}); n != 1 {
					t.Errorf("successful attempts on the good mirror = %v, want 1\n%s", n, m.Dump("cri_mirror_pull_attempts"))
				}
				if n := m.Sum(attempts, map[string]string{"mirror": "source"}); n != 0 {
					t.Errorf("the source was tried (%v attempts); the second mirror had the image", n)
				}
				failures := "cri_mirror_pull_attempt_failures_total"
				if n := m.Sum(failures, map[string]string{"mirror": faulty, "reason": tc.reason}); n != 1 {
					t.Errorf("failures of the faulty mirror with reason %s = %v, want 1\n%s", tc.reason, n, m.Dump(failures))
				}
			})
		}
	})
}

// TestSigtermDuringPulls (item 5): SIGTERM while pulls through a slow mirror are in flight.
// With a shutdown timeout longer than the pulls they complete; with a shorter one they fail
// with a gRPC status. Either way the proxy exits 0 within the timeout and removes its socket.
func TestSigtermDuringPulls(t *testing.T) {
	cleanImages(t)
	cases := []struct {
		name     string
		delay    time.Duration // on every blob GET
		shutdown time.Duration
		complete bool // the pulls are expected to succeed
	}{
		{"pulls finish within the shutdown timeout", 2 * time.Second, 20 * time.Second, true},
		{"pulls outlast the shutdown timeout", 20 * time.Second, 1 * time.Second, false},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const n = 4
			repo := fmt.Sprintf("e2e/term-%d", ci)
			imgs := pushMany(t, n, func(i int) string { return fmt.Sprintf("%s/m1/%s:%d", env.mirror.host, repo, i) })
			front := newRegistryFront(t, env.mirror.host)
			front.delayFor = func(r *http.Request) time.Duration {
				if isBlob(r) && r.Method == http.MethodGet {
					return tc.delay
				}
				return 0
			}
			allowHost(t, env.ctd, front.host, "http://"+front.host)
			p := startProxyWith(t, registriesConf(rule{prefix: sourceHost + "/" + repo, mirrors: []mirror{{location: front.host + "/m1/" + repo}}}),
				proxyOpts{args: []string{"--shutdown-timeout", tc.shutdown.String()}})
			p.t = t

			errs, ids := make([]error, n), make([]string, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ids[i], errs[i] = p.pull(fmt.Sprintf("%s/%s:%d", sourceHost, repo, i))
				}()
			}
			err := waitFor(30*time.Second, "every pull to reach the slow blobs", func() error {
				seen := map[string]bool{}
				for _, r := range front.requests() {
					if fromRuntime(r.UserAgent) && blobPath.MatchString(r.Path) {
						seen[r.Path] = true
					}
				}
				if len(seen) < n {
					return fmt.Errorf("%d distinct blobs requested", len(seen))
				}
				return nil
			})
			if err != nil {
				t.Fatalf("%v\nrequests:\n%s", err, front.dump(30))
			}

			start := time.Now()
			if err := p.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			bound := tc.shutdown + 10*time.Second
			if !p.waitExit(bound) {
				t.Fatalf("the proxy did not exit within %s of SIGTERM (shutdown timeout %s)", bound, tc.shutdown)
			}
			t.Logf("the proxy exited %s after SIGTERM: %s", time.Since(start).Round(time.Millisecond), p.proc.exitState())
			if p.proc.waitErr != nil {
				t.Errorf("the proxy exited with %v after SIGTERM, want exit status 0", p.proc.waitErr)
			}
			if !waitGroupWithin(&wg, 15*time.Second) {
				t.Fatalf("pulls still hanging 15s after the proxy exited")
			}
			if _, err := os.Lstat(p.sock); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket %s still there after a graceful stop (lstat: %v)", p.sock, err)
			}
			for i := range n {
				switch {
				case tc.complete && errs[i] != nil:
					t.Errorf("pull %d in flight at SIGTERM failed: %s; the shutdown timeout (%s) leaves time to finish", i, grpcMessage(errs[i]), tc.shutdown)
				case tc.complete && ids[i] != imgs[i].ID:
					t.Errorf("pull %d = %s, want %s", i, ids[i], imgs[i].ID)
				case !tc.complete && errs[i] == nil:
					t.Errorf("pull %d succeeded although it needed %s and the shutdown timeout is %s", i, tc.delay, tc.shutdown)
				case !tc.complete:
					if s, ok := status.FromError(errs[i]); !ok || s.Code() == codes.OK {
						t.Errorf("pull %d cut off by the stop: %v; want a gRPC status", i, errs[i])
					} else {
						t.Logf("pull %d cut off by the stop: %s", i, grpcMessage(errs[i]))
					}
				}
			}
			if !tc.complete && !hasLogLine(readFile(p.logPath()), "did not finish in time") {
				t.Errorf("the log does not say the in-flight calls were cut off")
			}
		})
	}
}
