//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/testenv"
)

// tagCheckEnv is a proxy with a tag-check policy in front of the shared containerd:
//
//   - rule src (a front on the source registry that requires the pod's credentials, basic auth)
//     with a tag-only mirror (a front on the mirror registry, path tcm): the whole rule is
//     source-required, so every pull of a tag is checked against the source;
//   - rule closed (a port nothing listens on) with the same mirror: the source is never
//     reachable; under it, e2e/req is source-required, e2e/ifr source-if-reachable, e2e/off off.
//
// Both fronts record every request with its Authorization header.
type tagCheckEnv struct {
	p           *proxy
	src, mir    *registryFront
	closed      string // 127.0.0.1:PORT of the unreachable source
	podUser     string
	podPass     string
	mirrorRepos string // where the mirror's repositories are pushed: env.mirror.host + "/tcm"
}

func newTagCheckEnv(t *testing.T, rt *criRuntime) *tagCheckEnv {
	t.Helper()
	e := &tagCheckEnv{podUser: "tc-pod", podPass: "tc-pod-secret-Vw3", closed: fmt.Sprintf("127.0.0.1:%d", env.closedPort)}
	e.src = newRegistryFront(t, env.source.host)
	e.src.user, e.src.pass = e.podUser, e.podPass
	// The mirror requires credentials of its own (from --auth-file), so that it challenges
	// every client and a client holding the pod's secret would send it there.
	e.mir = newRegistryFront(t, env.mirror.host)
	e.mir.user, e.mir.pass = "tc-mirror", "tc-mirror-secret-Qp8"
	authFile := filepath.Join(t.TempDir(), "auth.json")
	authJSON := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, e.mir.host, base64.StdEncoding.EncodeToString([]byte(e.mir.user+":"+e.mir.pass)))
	if err := os.WriteFile(authFile, []byte(authJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	rt.allowHost(t, e.src.host, "http://"+e.src.host)
	rt.allowHost(t, e.mir.host, "http://"+e.mir.host)
	e.mirrorRepos = env.mirror.host + "/tcm"
	mirrorLoc := e.mir.host + "/tcm"
	conf := fmt.Sprintf(`
[[registry]]
prefix = %[1]q
location = %[1]q
insecure = true
[[registry.mirror]]
location = %[2]q
insecure = true
pull-from-mirror = "tag-only"

[[registry]]
prefix = %[3]q
location = %[3]q
insecure = true
[[registry.mirror]]
location = %[2]q
insecure = true
pull-from-mirror = "tag-only"
`, e.src.host, mirrorLoc, e.closed)
	policy := strings.Join([]string{
		e.src.host + "=source-required",
		e.closed + "/e2e/req=source-required",
		e.closed + "/e2e/ifr=source-if-reachable",
		e.closed + "/e2e/off=off",
	}, ",")
	e.p = startProxyWith(t, conf, proxyOpts{runtime: rt, args: []string{"--tag-check", policy, "--tag-check-timeout", "2s", "--auth-file", authFile}})
	return e
}

// pull pulls ref through the proxy with the pod's credentials, as kubelet sends a pull secret.
func (e *tagCheckEnv) pull(ref string) (string, error) {
	ctx, cancel := callCtx()
	defer cancel()
	resp, err := e.p.img.PullImage(ctx, &runtimeapi.PullImageRequest{
		Image: &runtimeapi.ImageSpec{Image: ref},
		Auth:  &runtimeapi.AuthConfig{Username: e.podUser, Password: e.podPass},
	})
	return resp.GetImageRef(), err
}

func (e *tagCheckEnv) checks(registry, result string) float64 {
	return e.p.metrics().Sum("cri_mirror_tag_checks_total", map[string]string{"registry": registry, "result": result})
}

// mirrorManifestGets counts the runtime's manifest requests (every request not from the proxy:
// the test pushes to the registry behind the front) for repo (e.g. "e2e/tc-agree") at
// the mirror front whose last path element satisfies match.
func (e *tagCheckEnv) mirrorManifestGets(repo string, match func(tagOrDigest string) bool) int {
	return e.mir.count(func(r frontRequest) bool {
		m := manifestPath.FindStringSubmatch(r.Path)
		return m != nil && m[1] == "tcm/"+repo && !fromProbe(r.UserAgent) && match(m[2])
	})
}

// checkCredentials: the pod's secret reached the source (the proxy's HEAD among the requests)
// and never the mirror host.
func (e *tagCheckEnv) checkCredentials(t *testing.T) {
	t.Helper()
	headWithPod := e.src.count(func(r frontRequest) bool {
		return r.Method == "HEAD" && fromProbe(r.UserAgent) && basicCreds(r.Auth) == e.podUser+":"+e.podPass
	})
	if headWithPod == 0 {
		t.Errorf("no HEAD from the proxy with the pod's credentials reached the source front:\n%s", e.src.dump(20))
	}
	mirrorHeads := e.mir.count(func(r frontRequest) bool {
		return r.Method == "HEAD" && fromProbe(r.UserAgent) && basicCreds(r.Auth) == e.mir.user+":"+e.mir.pass
	})
	if mirrorHeads == 0 {
		t.Errorf("no HEAD from the proxy with the mirror's credentials reached the mirror front:\n%s", e.mir.dump(20))
	}
	for _, r := range e.mir.requests() {
		if leaks(r.Auth, e.podUser, e.podPass) {
			t.Errorf("LEAK: the pod's pull secret reached the mirror host %s: %s", e.mir.host, r)
		}
	}
}

// TestTagCheck: the tag check against real registries, in front of each runtime.
func TestTagCheck(t *testing.T) {
	eachRuntime(t, func(t *testing.T, rt *criRuntime) { testTagCheck(t, rt) })
}

func testTagCheck(t *testing.T, rt *criRuntime) {
	e := newTagCheckEnv(t, rt)
	rule := e.src.host

	t.Run("source and mirror agree: the mirror serves the source's digest", func(t *testing.T) {
		img := mustPushRandom(t, env.source.host+"/e2e/tc-agree:v1", e.mirrorRepos+"/e2e/tc-agree:v1")
		ref := e.src.host + "/e2e/tc-agree:v1"
		id, err := e.pull(ref)
		if err != nil {
			t.Fatalf("PullImage(%s): %s", ref, grpcMessage(err))
		}
		if id != rt.id(img) {
			t.Errorf("PullImage(%s) = %s, want %s", ref, id, rt.id(img))
		}
		byDigest := e.mirrorManifestGets("e2e/tc-agree", func(s string) bool { return s == img.Digest })
		byTag := e.mirrorManifestGets("e2e/tc-agree", func(s string) bool { return s == "v1" })
		if byDigest == 0 || byTag != 0 {
			t.Errorf("containerd asked the mirror %d times by the source's digest %s and %d times by the tag; want it pulled by the digest only:\n%s", byDigest, img.Digest, byTag, e.mir.dump(20))
		}
		if got := e.checks(rule, "match"); got != 1 {
			t.Errorf("tag checks match = %v, want 1\n%s", got, e.p.metrics().Dump("cri_mirror_tag_checks_total"))
		}
		// The pull's wait for the check: one observation, of about a round trip to the registries.
		waits := e.p.metrics()
		if n, sum := waits.Sum("cri_mirror_tag_check_duration_seconds_count", map[string]string{"registry": rule}),
			waits.Sum("cri_mirror_tag_check_duration_seconds_sum", map[string]string{"registry": rule}); n != 1 || sum <= 0 || sum > 2 {
			t.Errorf("checked pulls timed = %v, %vs in all; want 1, more than 0 and under the 2s check timeout\n%s", n, sum, waits.Dump("cri_mirror_tag_check_duration_seconds"))
		}
		checkNames(t, "ImageStatus", e.p.status(ref), []string{ref}, img.Digest)
		e.checkCredentials(t)
	})

	t.Run("mirror stale: the tag moved at the source, the source serves", func(t *testing.T) {
		old := mustPushRandom(t, e.mirrorRepos+"/e2e/tc-stale:v1")
		moved := mustPushRandom(t, env.source.host+"/e2e/tc-stale:v1")
		ref := e.src.host + "/e2e/tc-stale:v1"
		id, err := e.pull(ref)
		if err != nil {
			t.Fatalf("PullImage(%s): %s", ref, grpcMessage(err))
		}
		if want := rt.sourceAnswer(ref, moved); id != want {
			t.Errorf("PullImage(%s) = %s, want the source's image %s (the mirror's stale one is %s)", ref, id, want, rt.id(old))
		}
		if n := e.mirrorManifestGets("e2e/tc-stale", func(string) bool { return true }); n != 0 {
			t.Errorf("containerd asked the stale mirror %d times:\n%s", n, e.mir.dump(20))
		}
		if got := e.checks(rule, "stale"); got != 1 {
			t.Errorf("tag checks stale = %v, want 1", got)
		}
		if !strings.Contains(readFile(e.p.logPath()), "the mirror answers the tag with another image than the source") {
			t.Errorf("no warning about the stale mirror in the proxy's log")
		}
		e.checkCredentials(t)
	})

	t.Run("tag deleted at the source: the mirror's copy is not pulled", func(t *testing.T) {
		mustPushRandom(t, e.mirrorRepos+"/e2e/tc-gone:v1")
		ref := e.src.host + "/e2e/tc-gone:v1"
		before := e.checks(rule, "stale")
		if _, err := e.pull(ref); status.Code(err) != codes.NotFound {
			t.Errorf("PullImage(%s): %s; want NotFound, as the source answers", ref, grpcMessage(err))
		}
		if n := e.mirrorManifestGets("e2e/tc-gone", func(string) bool { return true }); n != 0 {
			t.Errorf("containerd asked the mirror %d times for a tag the source does not have:\n%s", n, e.mir.dump(20))
		}
		if got := e.checks(rule, "stale"); got != before+1 {
			t.Errorf("tag checks stale = %v, want %v", got, before+1)
		}
	})

	t.Run("mirror holds a platform-filtered index: accepted by platform match", func(t *testing.T) {
		native, err := testenv.Random(1024, 1, testenv.Arch)
		if err != nil {
			t.Fatal(err)
		}
		otherArch := "arm64"
		if testenv.Arch == "arm64" {
			otherArch = "amd64"
		}
		other, err := testenv.Random(1024, 1, otherArch)
		if err != nil {
			t.Fatal(err)
		}
		full, err := testenv.Index(native, other)
		if err != nil {
			t.Fatal(err)
		}
		filtered, err := testenv.Index(native)
		if err != nil {
			t.Fatal(err)
		}
		srcImg, err := testenv.PushAs(context.Background(), full, env.source.host+"/e2e/tc-multi:v1")
		if err != nil {
			t.Fatal(err)
		}
		mirImg, err := testenv.PushAs(context.Background(), filtered, e.mirrorRepos+"/e2e/tc-multi:v1")
		if err != nil {
			t.Fatal(err)
		}
		if srcImg.Digest == mirImg.Digest || srcImg.Instance != mirImg.Instance {
			t.Fatalf("fixture: the indexes must differ (%s, %s) and share the native child (%s, %s)", srcImg.Digest, mirImg.Digest, srcImg.Instance, mirImg.Instance)
		}
		ref := e.src.host + "/e2e/tc-multi:v1"
		id, err := e.pull(ref)
		if err != nil {
			t.Fatalf("PullImage(%s): %s", ref, grpcMessage(err))
		}
		if id != rt.id(srcImg) {
			t.Errorf("PullImage(%s) = %s, want %s", ref, id, rt.id(srcImg))
		}
		byDigest := e.mirrorManifestGets("e2e/tc-multi", func(s string) bool { return s == mirImg.Digest })
		byTag := e.mirrorManifestGets("e2e/tc-multi", func(s string) bool { return s == "v1" })
		if byDigest == 0 || byTag != 0 {
			t.Errorf("containerd asked the mirror %d times by its index digest %s and %d times by the tag; want it pulled by the digest only:\n%s", byDigest, mirImg.Digest, byTag, e.mir.dump(20))
		}
		if got := e.checks(rule, "platform_match"); got != 1 {
			t.Errorf("tag checks platform_match = %v, want 1", got)
		}
		checkNames(t, "ImageStatus", e.p.status(ref), []string{ref}, "")
	})

	t.Run("source unreachable under each policy", func(t *testing.T) {
		for _, tc := range []struct {
			path    string
			wantErr codes.Code // OK: served by the mirror
		}{
			{"e2e/req/app", codes.Unknown},
			{"e2e/ifr/app", codes.OK},
			{"e2e/off/app", codes.OK},
		} {
			img := mustPushRandom(t, e.mirrorRepos+"/"+tc.path+":v1")
			ref := e.closed + "/" + tc.path + ":v1"
			before := e.checks(e.closed, "source_unreachable")
			id, err := e.pull(ref)
			switch {
			case tc.wantErr != codes.OK:
				if status.Code(err) != tc.wantErr || !strings.HasPrefix(status.Convert(err).Message(), "RegistryUnavailable: ") || !strings.Contains(grpcMessage(err), "source-required") || !strings.Contains(grpcMessage(err), e.closed) {
					t.Errorf("PullImage(%s) = %s, %v; want %v, starting with the reason kubelet shows, naming the policy and the source", ref, id, grpcMessage(err), tc.wantErr)
				}
				if n := e.mirrorManifestGets(tc.path, func(string) bool { return true }); n != 0 {
					t.Errorf("%s: the runtime asked the mirror %d times though the source must answer first", ref, n)
				}
			case err != nil:
				t.Errorf("PullImage(%s): %s; want it served by the mirror", ref, grpcMessage(err))
			case id != rt.id(img):
				t.Errorf("PullImage(%s) = %s, want the mirror's %s", ref, id, rt.id(img))
			}
			want := before + 1
			if strings.Contains(tc.path, "/off/") {
				want = before
			}
			if got := e.checks(e.closed, "source_unreachable"); got != want {
				t.Errorf("%s: source_unreachable = %v, want %v", ref, got, want)
			}
		}
	})

	t.Run("trust on first use: a changed answer is detected across a restart", func(t *testing.T) {
		const path = "e2e/ifr/tofu"
		first := mustPushRandom(t, e.mirrorRepos+"/"+path+":v1")
		ref := e.closed + "/" + path + ":v1"
		changes := func() float64 {
			return e.p.metrics().Sum("cri_mirror_tag_changes_total", map[string]string{"registry": e.closed})
		}
		if id, err := e.pull(ref); err != nil || id != rt.id(first) {
			t.Fatalf("PullImage(%s) = %s, %v; want %s", ref, id, err, rt.id(first))
		}
		if id, err := e.pull(ref); err != nil || id != rt.id(first) || changes() != 0 {
			t.Fatalf("the same answer again: %s, %v, tag changes %v; want %s and no change", id, err, changes(), rt.id(first))
		}
		second := mustPushRandom(t, e.mirrorRepos+"/"+path+":v1") // the tag moves on the mirror
		e.p.restart()
		if got := changes(); got != 0 {
			t.Fatalf("tag changes right after the restart = %v, want 0", got)
		}
		if id, err := e.pull(ref); err != nil || id != rt.id(second) {
			t.Fatalf("PullImage(%s) after the restart = %s, %v; want the mirror's new answer %s", ref, id, err, rt.id(second))
		}
		if got := changes(); got != 1 {
			t.Errorf("tag changes after the mirror's answer moved = %v, want 1", got)
		}
		if !strings.Contains(readFile(e.p.logPath()), "the mirror's answer for the tag changed") {
			t.Errorf("no warning about the changed answer in the proxy's log")
		}
		if strings.Contains(readFile(e.p.logPath()), e.podPass) {
			t.Errorf("the proxy's log contains the pod's password")
		}
	})
}
