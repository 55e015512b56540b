package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	digest "github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.podman.io/image/v5/docker/reference"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/metrics"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/fakecri"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/promtest"
)

// fakeTags is a tagRegistry double: digests by tag reference, manifests by
// digest reference; it records which credentials went to which reference.
type fakeTags struct {
	mu        sync.Mutex
	digests   map[string]digest.Digest
	down      map[string]bool // hosts that cannot be reached
	hang      map[string]bool // hosts that never answer (until the HEAD is stopped)
	manifests map[string][]byte
	heads     []string            // references asked with HEAD
	auth      map[string][]string // reference → usernames it was sent ("" = none)
}

func (f *fakeTags) record(ref reference.Named, auth *runtimeapi.AuthConfig) {
	if f.auth == nil {
		f.auth = map[string][]string{}
	}
	f.auth[ref.String()] = append(f.auth[ref.String()], auth.GetUsername())
}

func (f *fakeTags) Digest(ctx context.Context, _ *resolver.Resolution, _ resolver.Candidate, ref reference.Named, auth *runtimeapi.AuthConfig) (digest.Digest, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heads = append(f.heads, ref.String())
	f.record(ref, auth)
	if f.hang[reference.Domain(ref)] {
		f.mu.Unlock()
		<-ctx.Done()
		f.mu.Lock()
		return "", ctx.Err()
	}
	if f.down[reference.Domain(ref)] {
		return "", errors.New("dial tcp: connection refused")
	}
	if d, ok := f.digests[ref.String()]; ok {
		return d, nil
	}
	return "", errors.New("StatusCode: 404")
}

func (f *fakeTags) Manifest(_ context.Context, _ resolver.Candidate, ref reference.Named, auth *runtimeapi.AuthConfig) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(ref, auth)
	if b, ok := f.manifests[ref.String()]; ok {
		return b, nil
	}
	return nil, errors.New("manifest unknown")
}

// asked returns the references asked with HEAD, and the usernames sent to
// each reference, so far (a HEAD nobody waited for may still arrive).
func (f *fakeTags) asked() ([]string, map[string][]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	auth := map[string][]string{}
	for k, v := range f.auth {
		auth[k] = slices.Clone(v)
	}
	return slices.Clone(f.heads), auth
}

func (f *fakeTags) setDigest(ref string, d digest.Digest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.digests[ref] = d
}

const (
	tcRepo   = "gcr.io/x/app"
	tcMirror = "127.0.0.1:5000/mirror/gcr.io/x/app"
	tcTag    = tcRepo + ":v1"
)

func tagCheckHarness(t *testing.T, policy string, f *fakeTags) *harness {
	t.Helper()
	return tagCheckHarnessTimeout(t, policy, f, time.Second)
}

func tagCheckHarnessTimeout(t *testing.T, policy string, f *fakeTags, timeout time.Duration) *harness {
	t.Helper()
	p, err := resolver.ParseTagCheckPolicy(policy)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t,
		WithPlatform(Platform{OS: "linux", Architecture: "amd64"}),
		WithCredentials(mapCredentials{"127.0.0.1:5000": {Username: "mirror-user", Password: "m"}}),
	)
	// The store is the harness's own, reopened on restart: pass it late.
	h.opts = append(h.opts, withTagCheck(p, timeout, f, nil))
	h.restart()
	h.srv.tagCheck.records = h.store
	return h
}

func checks(h *harness, result string) float64 {
	return testutil.ToFloat64(h.metrics.TagChecks.WithLabelValues("gcr.io/x", result))
}

// checkWaits is how many pulls of the rule gcr.io/x waited for a tag
// check (cri_mirror_tag_check_duration_seconds), and how long in all.
func checkWaits(t *testing.T, h *harness) (float64, float64) {
	t.Helper()
	families, err := h.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	set, rule := promtest.FromFamilies(families), map[string]string{"registry": "gcr.io/x"}
	return set.Sum("cri_mirror_tag_check_duration_seconds_count", rule), set.Sum("cri_mirror_tag_check_duration_seconds_sum", rule)
}

func TestTagCheckSourceReachable(t *testing.T) {
	amd, arm, amdOther := dg("amd64 image"), dg("arm64 image"), dg("other amd64 image")
	full := indexJSON(t, false, entry{"linux/amd64", amd}, entry{"linux/arm64", arm})
	filtered := indexJSON(t, false, entry{"linux/amd64", amd})
	otherFiltered := indexJSON(t, false, entry{"linux/amd64", amdOther})
	S, F, O := digest.FromBytes(full), digest.FromBytes(filtered), digest.FromBytes(otherFiltered)
	single := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + string(dg("cfg")) + `","size":2},"layers":[]}`)
	one := digest.FromBytes(single)

	for _, tc := range []struct {
		name      string
		mirror    digest.Digest     // the mirror's answer for the tag ("" = none)
		manifests map[string][]byte // by digest reference
		wantPull  string
		wantCheck string // result counted, "" = none
	}{
		{name: "the mirror agrees: pulled by the source's digest", mirror: S, wantPull: tcMirror + "@" + S.String(), wantCheck: metrics.TagCheckMatch},
		{
			name: "a platform-filtered index with the same child: pulled by the mirror's digest", mirror: F,
			manifests: map[string][]byte{tcRepo + "@" + S.String(): full, tcMirror + "@" + F.String(): filtered},
			wantPull:  tcMirror + "@" + F.String(), wantCheck: metrics.TagCheckPlatformMatch,
		},
		{
			name: "a stale tag (another image for this platform): the source serves", mirror: O,
			manifests: map[string][]byte{tcRepo + "@" + S.String(): full, tcMirror + "@" + O.String(): otherFiltered},
			wantPull:  tcTag, wantCheck: metrics.TagCheckStale,
		},
		{
			name: "another single image: stale", mirror: one,
			manifests: map[string][]byte{tcRepo + "@" + S.String(): full, tcMirror + "@" + one.String(): single},
			wantPull:  tcTag, wantCheck: metrics.TagCheckStale,
		},
		{
			name: "mirror bytes that do not match its digest: stale", mirror: F,
			manifests: map[string][]byte{tcRepo + "@" + S.String(): full, tcMirror + "@" + F.String(): append(append([]byte{}, filtered...), ' ')},
			wantPull:  tcTag, wantCheck: metrics.TagCheckStale,
		},
		{name: "no answer from the mirror: pinned to the source's digest", wantPull: tcMirror + "@" + S.String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeTags{digests: map[string]digest.Digest{tcTag: S}, manifests: tc.manifests}
			if tc.mirror != "" {
				f.digests[tcMirror+":v1"] = tc.mirror
			}
			h := tagCheckHarness(t, "gcr.io=source-required", f)
			for _, ref := range []string{tcMirror + "@" + S.String(), tcMirror + "@" + F.String(), tcTag} {
				h.rt.Publish(ref, "app")
			}
			resp, err := h.pull(tcTag, &runtimeapi.AuthConfig{Username: "pod-user", Password: "p"})
			if err != nil {
				t.Fatalf("pull: %v", err)
			}
			if got := h.rt.PulledRefs(); !slices.Equal(got, []string{tc.wantPull}) {
				t.Errorf("runtime pulls = %q, want [%s]", got, tc.wantPull)
			}
			for _, r := range metrics.TagCheckResults {
				want := 0.0
				if r == tc.wantCheck {
					want = 1
				}
				if got := checks(h, r); got != want {
					t.Errorf("tag checks %s = %v, want %v", r, got, want)
				}
			}
			if n, sum := checkWaits(t, h); n != 1 || sum <= 0 {
				t.Errorf("pulls that waited for the check = %v (%.6fs in all), want 1", n, sum)
			}
			// kubelet sees the tag under its own name.
			if img := h.status(tcTag); img.GetId() != resp.GetImageRef() || !slices.Contains(img.GetRepoTags(), tcTag) {
				t.Errorf("ImageStatus(%s) = %v, want id %s with the tag", tcTag, img, resp.GetImageRef())
			}
			// Credentials: the pod's only to the source, the mirror's only to the mirror.
			_, sent := f.asked()
			for ref, users := range sent {
				want := "mirror-user"
				if strings.HasPrefix(ref, "gcr.io/") {
					want = "pod-user"
				}
				for _, u := range users {
					if u != want {
						t.Errorf("%s was sent the credentials of %q, want %q", ref, u, want)
					}
				}
			}
			if r, ok := h.store.Tag(tcTag); !ok || r.Digest != S.String() {
				t.Errorf("tag record = %+v (found %v), want the source's digest %s", r, ok, S)
			}
		})
	}
}

// TestTagCheckSourceHasNoSuchTag: a source that answers the tag is not
// there is an answer, not an outage: the mirror is not pulled, the source
// is, and its "not found" is the caller's.
func TestTagCheckSourceHasNoSuchTag(t *testing.T) {
	for _, policy := range []string{"gcr.io=source-required", "gcr.io=source-if-reachable"} {
		f := &fakeTags{digests: map[string]digest.Digest{tcMirror + ":v1": dg("left over")}}
		h := tagCheckHarness(t, policy, f)
		h.rt.Publish(tcMirror+"@"+dg("left over").String(), "app")
		h.rt.Publish(tcMirror+":v1", "app")
		_, err := h.pull(tcTag, nil)
		if status.Code(err) != codes.NotFound {
			t.Errorf("%s: pull = %v, want NotFound from the source", policy, err)
		}
		if got := h.rt.PulledRefs(); !slices.Equal(got, []string{tcTag}) {
			t.Errorf("%s: runtime pulls = %q, want the source only", policy, got)
		}
		if got := checks(h, metrics.TagCheckStale); got != 1 {
			t.Errorf("%s: stale = %v, want 1 (the mirror's answer)", policy, got)
		}
		if got := checks(h, metrics.TagCheckSourceUnreachable); got != 0 {
			t.Errorf("%s: source_unreachable = %v, want 0: the source answered", policy, got)
		}
	}
}

func TestTagCheckSourceUnreachable(t *testing.T) {
	M := dg("mirror index")
	for _, tc := range []struct {
		policy   string
		image    string
		wantCode codes.Code
		wantMsg  string
		wantPull []string
	}{
		{policy: "gcr.io/x=source-required", image: tcTag, wantCode: codes.Unknown, wantMsg: "RegistryUnavailable: pull gcr.io/x/app:v1: tag check policy source-required"},
		{policy: "gcr.io/x=source-if-reachable", image: tcTag, wantPull: []string{tcMirror + "@" + M.String()}},
		{policy: "quay.io=source-required", image: "quay.io/org/app:v1", wantCode: codes.FailedPrecondition, wantMsg: "never contacts the source"},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			f := &fakeTags{digests: map[string]digest.Digest{tcMirror + ":v1": M}, down: map[string]bool{"gcr.io": true}}
			h := tagCheckHarness(t, tc.policy, f)
			h.rt.Publish(tcMirror+"@"+M.String(), "app")
			_, err := h.pull(tc.image, nil)
			if status.Code(err) != tc.wantCode || (err != nil && !strings.Contains(err.Error(), tc.wantMsg)) {
				t.Fatalf("pull: %v, want code %v naming %q", err, tc.wantCode, tc.wantMsg)
			}
			if got := h.rt.PulledRefs(); !slices.Equal(got, tc.wantPull) {
				t.Errorf("runtime pulls = %q, want %q", got, tc.wantPull)
			}
			registry := "gcr.io/x"
			if strings.HasPrefix(tc.image, "quay.io") {
				registry = "quay.io"
				if heads, _ := f.asked(); slices.ContainsFunc(heads, func(r string) bool { return strings.HasPrefix(r, "quay.io/") }) {
					t.Errorf("the source of a never-contact-source rule was asked: %q", heads)
				}
			}
			if got := testutil.ToFloat64(h.metrics.TagChecks.WithLabelValues(registry, metrics.TagCheckSourceUnreachable)); got != 1 {
				t.Errorf("source_unreachable = %v, want 1", got)
			}
		})
	}
}

// TestTagCheckTrustOnFirstUse: with the source unreachable, a mirror's
// answer that changes from the one recorded is counted, also after a
// restart; the same answer again is not.
func TestTagCheckTrustOnFirstUse(t *testing.T) {
	M1, M2 := dg("first"), dg("second")
	f := &fakeTags{digests: map[string]digest.Digest{tcMirror + ":v1": M1}, down: map[string]bool{"gcr.io": true}}
	h := tagCheckHarness(t, "gcr.io/x=source-if-reachable", f)
	h.rt.Publish(tcMirror+"@"+M1.String(), "one")
	h.rt.Publish(tcMirror+"@"+M2.String(), "two")
	changes := func() float64 { return testutil.ToFloat64(h.metrics.TagChanges.WithLabelValues("gcr.io/x")) }

	h.mustPull(tcTag)
	h.mustPull(tcTag)
	if got := changes(); got != 0 {
		t.Fatalf("tag changes after the same answer twice = %v, want 0", got)
	}
	h.stop()
	h.start()
	h.srv.tagCheck.records = h.store
	f.setDigest(tcMirror+":v1", M2)
	if id := h.mustPull(tcTag); id != fakecri.IDOf("two") {
		t.Errorf("pulled %s, want the mirror's new answer", id)
	}
	if got := changes(); got != 1 {
		t.Errorf("tag changes after the mirror's answer moved across a restart = %v, want 1", got)
	}
	if r, _ := h.store.Tag(tcTag); r.Digest != M2.String() {
		t.Errorf("record = %s, want the new answer %s", r.Digest, M2)
	}
}

// TestTagCheckDoesNotApply: a digest, a tag no entry covers, and off are
// pulled as without the check, asking no registry.
func TestTagCheckDoesNotApply(t *testing.T) {
	d := strings.Repeat("b", 64)
	for _, tc := range []struct{ policy, image, pull string }{
		{"gcr.io=source-required", tcRepo + "@sha256:" + d, tcMirror + "@sha256:" + d},
		{"docker.io=source-required", tcTag, tcMirror + ":v1"},
		{"gcr.io=source-required,gcr.io/x=off", tcTag, tcMirror + ":v1"},
		{"gcr.io=source-required", "registry.example.com/app:v1", "registry.example.com/app:v1"},
	} {
		f := &fakeTags{digests: map[string]digest.Digest{}}
		h := tagCheckHarness(t, tc.policy, f)
		h.rt.Publish(tc.pull, "app")
		h.mustPull(tc.image)
		if got := h.rt.PulledRefs(); !slices.Equal(got, []string{tc.pull}) {
			t.Errorf("%s under %s: runtime pulls = %q, want [%s]", tc.image, tc.policy, got, tc.pull)
		}
		if heads, _ := f.asked(); len(heads) != 0 {
			t.Errorf("%s under %s: registries asked %q, want none", tc.image, tc.policy, heads)
		}
		if n, _ := checkWaits(t, h); n != 0 {
			t.Errorf("%s under %s: %v pulls waited for a check, want none", tc.image, tc.policy, n)
		}
	}
}

func TestDockerAuth(t *testing.T) {
	da, tok := dockerAuth(&runtimeapi.AuthConfig{Auth: "dTpwOng="}) // "u:p:x"
	if da == nil || da.Username != "u" || da.Password != "p:x" || tok != "" {
		t.Errorf("Auth field: %+v %q", da, tok)
	}
	if da, tok := dockerAuth(&runtimeapi.AuthConfig{RegistryToken: "t"}); da != nil || tok != "t" {
		t.Errorf("registry token: %+v %q", da, tok)
	}
	if da, tok := dockerAuth(nil); da != nil || tok != "" {
		t.Errorf("nil: %+v %q", da, tok)
	}
}

// TestRegistryTagsAgainstRealRegistries: the HEAD and the manifest read of
// the tag check go through containers/image to the host named, and the read
// by digest never goes to the rule's mirror of it (which would receive the
// caller's credentials), though containers/image tries mirrors first when
// it reads the rules.
func TestRegistryTagsAgainstRealRegistries(t *testing.T) {
	src := registryWith(t, "app:1")
	var mirrorAsked atomic.Int32
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mirrorAsked.Add(1)
		w.WriteHeader(http.StatusNotFound)
	}))
	t.Cleanup(mirror.Close)
	mirrorHost := strings.TrimPrefix(mirror.URL, "http://")

	dir := t.TempDir()
	conf := filepath.Join(dir, "registries.conf")
	rules := fmt.Sprintf("[[registry]]\nprefix = %q\nlocation = %q\ninsecure = true\n[[registry.mirror]]\nlocation = %q\ninsecure = true\n", src, src, mirrorHost+"/m")
	if err := os.WriteFile(conf, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := resolver.New(conf, filepath.Join(dir, "registries.conf.d"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Resolve(src + "/app:1")
	if err != nil {
		t.Fatal(err)
	}
	source, _ := sourceCandidate(res)
	want, err := remote.Head(mustTag(t, src+"/app:1"))
	if err != nil {
		t.Fatal(err)
	}
	tags := &registryTags{heads: newHeadClients("/nonexistent/auth.json", "cri-mirror-proxy/test"), authFile: "/nonexistent/auth.json", agent: "cri-mirror-proxy/test", noRules: filepath.Join(dir, "none.d")}
	pod := &runtimeapi.AuthConfig{Username: "pod-user", Password: "p"}

	d, err := tags.Digest(context.Background(), res, source, source.Ref, pod)
	if err != nil || d.String() != want.Digest.String() {
		t.Fatalf("Digest = %s, %v; want %s", d, err, want.Digest)
	}
	ref, _ := reference.WithDigest(reference.TrimNamed(source.Ref), d)
	b, err := tags.Manifest(context.Background(), source, ref, pod)
	if err != nil || !provesDigest(b, d) {
		t.Fatalf("Manifest(%s) = %d bytes, %v; want the bytes of %s", ref, len(b), err, d)
	}
	if n := mirrorAsked.Load(); n != 0 {
		t.Errorf("the rule's mirror was asked %d times; the tag check asks the host named only", n)
	}
}

// TestTagCheckShortNames: a short name resolved through [aliases] is
// checked under the name it resolves to; one completed with several
// unqualified-search registries (several sources) is not checked.
func TestTagCheckShortNames(t *testing.T) {
	S := dg("tools")
	const mirror = "127.0.0.1:5000/mirror/gcr.io/x/tools"
	f := &fakeTags{digests: map[string]digest.Digest{"gcr.io/x/tools:latest": S, mirror + ":latest": S}}
	h := tagCheckHarness(t, "gcr.io/x=source-required", f)
	h.rt.Publish(mirror+"@"+S.String(), "tools")
	h.mustPull("ops/tools")
	if got := h.rt.PulledRefs(); !slices.Equal(got, []string{mirror + "@" + S.String()}) {
		t.Errorf("runtime pulls = %q, want the mirror by the source's digest", got)
	}
	if r, ok := h.store.Tag("gcr.io/x/tools:latest"); !ok || r.Digest != S.String() {
		t.Errorf("tag record of the alias target = %+v (found %v)", r, ok)
	}

	named := func(s string) reference.Named {
		n, err := reference.ParseDockerRef(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	two := &resolver.Resolution{Original: named("docker.io/library/app:v1"), Candidates: []resolver.Candidate{
		{Ref: named("a.test/app:v1"), Image: named("a.test/app:v1"), Source: true},
		{Ref: named("b.test/app:v1"), Image: named("b.test/app:v1"), Source: true},
	}}
	if _, ok := checkedImage(two); ok {
		t.Error("a resolution with two images (search registries) is checked")
	}
}

func TestDescribeTagCheck(t *testing.T) {
	h := newHarness(t)
	p, err := resolver.ParseTagCheckPolicy("gcr.io/x=source-if-reachable,quay.io=source-required,docker.io=off")
	if err != nil {
		t.Fatal(err)
	}
	for image, want := range map[string]string{
		"gcr.io/x/app:v1": "the source gcr.io/x/app:v1 is asked",
		"gcr.io/x/app@sha256:" + strings.Repeat("c", 64): "does not apply",
		"quay.io/org/app:v1":                             "never contacts the source, so the tag cannot be checked and the pull fails",
		"nginx:1.27":                                     "tag check: off",
		"registry.example.com/app:v1":                    "",
	} {
		res, err := h.rules.Resolve(image)
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(DescribeTagCheck(res, p), "\n")
		if (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("DescribeTagCheck(%s) = %q, want it to say %q", image, got, want)
		}
	}
}

// TestTagCheckWaitsOnlyForWhatItPulls: once a mirror agrees with the source,
// a mirror after it that never answers does not hold the pull (whose caller
// gives up long before the check's own bound); it stays a candidate, pinned
// to the source's digest.
func TestTagCheckWaitsOnlyForWhatItPulls(t *testing.T) {
	S := dg("app")
	f := &fakeTags{
		digests: map[string]digest.Digest{"docker.io/library/app:v1": S, "mirror-a.test/hub/library/app:v1": S},
		hang:    map[string]bool{"mirror-b.test": true},
	}
	h := tagCheckHarnessTimeout(t, "docker.io=source-required", f, time.Hour)
	h.rt.Publish("mirror-a.test/hub/library/app@"+S.String(), "app")
	h.mustPull("app:v1") // within the harness's 10s call deadline
	if got := h.rt.PulledRefs(); !slices.Equal(got, []string{"mirror-a.test/hub/library/app@" + S.String()}) {
		t.Errorf("runtime pulls = %q, want the first mirror by the source's digest", got)
	}
	// The first mirror's pull fails: the second is tried, pinned to S.
	h.rt.Fail("mirror-a.test/hub/library/app@"+S.String(), status.Error(codes.Unavailable, "injected"))
	h.rt.Publish("mirror-b.test/library/app@"+S.String(), "app")
	h.mustPull("app:v1")
	if got := h.rt.PulledRefs(); !slices.Contains(got, "mirror-b.test/library/app@"+S.String()) {
		t.Errorf("runtime pulls = %q, want the second mirror pinned to the source's digest after the first failed", got)
	}
}
