package proxy

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/fakecri"
)

// fakeIndexes is an indexReader double: manifests by reference, companion
// layers by repository:tag. It records what was asked.
type fakeIndexes struct {
	manifests  map[string][]byte
	companions map[string][]byte
	asked      []string
}

func (f *fakeIndexes) Manifest(_ context.Context, _ *resolver.Resolution, c resolver.Candidate) ([]byte, error) {
	f.asked = append(f.asked, c.Ref.String())
	if b, ok := f.manifests[c.Ref.String()]; ok {
		return b, nil
	}
	return nil, status.Error(codes.NotFound, "manifest unknown")
}

func (f *fakeIndexes) Companion(_ context.Context, _ *resolver.Resolution, c resolver.Candidate, tag string) ([]byte, error) {
	ref := repoOf(c.Ref.String()) + ":" + tag
	f.asked = append(f.asked, ref)
	if b, ok := f.companions[ref]; ok {
		return b, nil
	}
	return nil, status.Error(codes.NotFound, "manifest unknown")
}

func TestDigestSubstitution(t *testing.T) {
	const (
		repo   = "gcr.io/x/app"
		mirror = "127.0.0.1:5000/mirror/gcr.io/x/app"
	)
	// The fake runtime names an image content's manifest fakecri.DigestOf(content).
	amd64, arm64 := digest.Digest(fakecri.DigestOf("amd64 image")), dg("arm64 manifest")
	index := indexJSON(t, false, entry{"linux/arm64", arm64}, entry{"unknown/unknown", dg("att")}, entry{"linux/amd64", amd64})
	armOnly := indexJSON(t, true, entry{"linux/arm64", arm64}, entry{"linux/s390x", dg("s390x")})
	D := digest.FromBytes(index)
	tampered := append(append([]byte(nil), index...), ' ')

	for _, tc := range []struct {
		name       string
		manifests  map[string][]byte // indexReader manifests by reference
		companions map[string][]byte
		file       []byte // in the index directory under D's name
		digest     digest.Digest
		from       string // index_from of a success
		err        []string
	}{
		{name: "index from the mirror", manifests: map[string][]byte{mirror + "@" + D.String(): index}, from: "mirror"},
		{name: "index from the source", manifests: map[string][]byte{repo + "@" + D.String(): index}, from: "source"},
		{name: "index from the directory", file: index, from: "index_dir"},
		{name: "index from the companion", companions: map[string][]byte{mirror + ":" + CompanionTag(D): index}, from: "companion"},
		{name: "bytes that do not hash to the digest are refused everywhere",
			manifests:  map[string][]byte{mirror + "@" + D.String(): tampered, repo + "@" + D.String(): tampered},
			companions: map[string][]byte{mirror + ":" + CompanionTag(D): tampered}, file: tampered,
			err: []string{"no index with digest " + D.String(), "mirror " + mirror + "@" + D.String() + ": refused", "source " + repo + "@" + D.String() + ": refused",
				"index file", "companion " + mirror + ":" + CompanionTag(D) + ": refused"}},
		{name: "no index anywhere", err: []string{"no index with digest " + D.String(), "no such file", "manifest unknown"}},
		{name: "index without the platform", digest: digest.FromBytes(armOnly),
			manifests: map[string][]byte{mirror + "@" + digest.FromBytes(armOnly).String(): armOnly},
			err:       []string{"no manifest for platform linux/amd64: the index lists linux/arm64, linux/s390x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			idx := &fakeIndexes{manifests: tc.manifests, companions: tc.companions}
			dir := t.TempDir()
			h := newHarness(t, withIndexReader(idx), WithIndexDir(dir), WithPlatform(Platform{OS: "linux", Architecture: "amd64"}))
			d := D
			if tc.digest != "" {
				d = tc.digest
			}
			if tc.file != nil {
				if err := os.WriteFile(filepath.Join(dir, IndexFileName(d)), tc.file, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// The mirror holds only the amd64 child; the source nothing.
			h.rt.Publish(mirror+"@"+amd64.String(), "amd64 image")
			original := repo + "@" + d.String()

			resp, err := h.pull(original, nil)
			if tc.err != nil {
				if err == nil {
					t.Fatalf("pull %s succeeded, want an error", original)
				}
				for _, want := range tc.err {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error lacks %q:\n%v", want, err)
					}
				}
				if slices.Contains(h.rt.PulledRefs(), mirror+"@"+amd64.String()) {
					t.Errorf("the child was pulled without a proven index: %q", h.rt.PulledRefs())
				}
				return
			}
			if err != nil {
				t.Fatalf("pull %s: %v", original, err)
			}
			if want := fakecri.IDOf("amd64 image"); resp.GetImageRef() != want {
				t.Errorf("image %s, want %s", resp.GetImageRef(), want)
			}
			wantPulls := []string{mirror + "@" + d.String(), original, mirror + "@" + amd64.String()}
			if got := h.rt.PulledRefs(); !slices.Equal(got, wantPulls) {
				t.Errorf("runtime pulls %q, want %q", got, wantPulls)
			}
			if n := counterValue(t, h.registry, "cri_mirror_digest_substitutions_total",
				map[string]string{"registry": "gcr.io/x", "index_from": tc.from, "result": "success"}); n != 1 {
				t.Errorf("substitutions{index_from=%s,result=success} = %v, want 1", tc.from, n)
			}

			// kubelet asks by the pod's digest; the child's digest works too;
			// both survive a restart.
			for _, when := range []string{"", " after a restart"} {
				if when != "" {
					h.restart()
				}
				img := h.status(original)
				if img == nil || img.GetId() != resp.GetImageRef() {
					t.Fatalf("ImageStatus(%s)%s = %v, want %s", original, when, img, resp.GetImageRef())
				}
				if len(img.RepoDigests) == 0 || img.RepoDigests[0] != original {
					t.Errorf("repo_digests%s = %q, want %s first", when, img.RepoDigests, original)
				}
				for _, rd := range img.RepoDigests {
					if strings.HasPrefix(rd, "127.0.0.1:5000/") {
						t.Errorf("repo_digests%s show the mirror: %q", when, img.RepoDigests)
					}
				}
				if img := h.status(repo + "@" + amd64.String()); img == nil || img.GetId() != resp.GetImageRef() {
					t.Errorf("ImageStatus(%s@child)%s = %v", repo, when, img)
				}
			}
		})
	}
}

// TestDigestSubstitutionNeverContactSource: under a rule that never
// contacts the source, neither the runtime nor the index search asks it.
func TestDigestSubstitutionNeverContactSource(t *testing.T) {
	amd64 := digest.Digest(fakecri.DigestOf("amd64 image"))
	index := indexJSON(t, false, entry{"linux/amd64", amd64})
	D := digest.FromBytes(index)
	idx := &fakeIndexes{}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, IndexFileName(D)), index, 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, withIndexReader(idx), WithIndexDir(dir), WithPlatform(Platform{OS: "linux", Architecture: "amd64"}))
	h.rt.Publish("mirror-x.test/ncs/app@"+amd64.String(), "amd64 image")
	h.mustPull("ncs.test/app@" + D.String())
	for _, ref := range append(h.rt.PulledRefs(), idx.asked...) {
		if strings.HasPrefix(ref, "ncs.test/") {
			t.Errorf("the source was asked for %s", ref)
		}
	}
}

// TestNoSubstitutionByTag: a tag pull that no candidate has fails as
// before, without looking for an index.
func TestNoSubstitutionByTag(t *testing.T) {
	idx := &fakeIndexes{}
	h := newHarness(t, withIndexReader(idx))
	if _, err := h.pull("gcr.io/x/app:v1", nil); err == nil {
		t.Fatal("pull of a missing tag succeeded")
	}
	if len(idx.asked) != 0 {
		t.Errorf("a tag pull looked for an index: %q", idx.asked)
	}
}

// TestDigestSubstitutionSkipsHeldMirror: a mirror that just failed (its
// breaker open) is not asked for the index or its companion; the source
// serves the child.
func TestDigestSubstitutionSkipsHeldMirror(t *testing.T) {
	const (
		repo   = "gcr.io/x/app"
		mirror = "127.0.0.1:5000/mirror/gcr.io/x/app"
	)
	amd64 := digest.Digest(fakecri.DigestOf("amd64 image"))
	index := indexJSON(t, false, entry{"linux/amd64", amd64})
	D := digest.FromBytes(index)
	idx := &fakeIndexes{}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, IndexFileName(D)), index, 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, withIndexReader(idx), WithIndexDir(dir), WithPlatform(Platform{OS: "linux", Architecture: "amd64"}))
	h.rt.Fail(mirror+"@"+D.String(), status.Error(codes.Unknown, "dial tcp 127.0.0.1:5000: connect: connection refused"))
	h.rt.Publish(repo+"@"+amd64.String(), "amd64 image")
	h.mustPull(repo + "@" + D.String())
	for _, ref := range idx.asked {
		if strings.HasPrefix(ref, "127.0.0.1:5000/") {
			t.Errorf("the held-back mirror was asked for %s", ref)
		}
	}
	if got, want := h.rt.PulledRefs(), []string{mirror + "@" + D.String(), repo + "@" + D.String(), repo + "@" + amd64.String()}; !slices.Equal(got, want) {
		t.Errorf("runtime pulls %q, want %q", got, want)
	}
}
