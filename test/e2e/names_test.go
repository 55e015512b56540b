//go:build e2e

package e2e

import (
	"sort"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/testenv"
)

// TestImageKinds: multi-arch indexes, images with a User, several tags of one image, one image
// in two repositories, short names, and lookups by digest all work under the original names,
// in front of each runtime.
func TestImageKinds(t *testing.T) {
	eachRuntime(t, func(t *testing.T, rt *criRuntime) {
		p := startProxyOn(t, rt, registriesConf(
			sourceRule("m1"),
			rule{prefix: "docker.io", mirrors: []mirror{{location: env.mirrorLoc("hub"), policy: "tag-only"}}},
		))
		src := func(path string) string { return sourceHost + "/" + path }

		t.Run("multi-arch index", func(t *testing.T) {
			p.t = t
			ref := src("e2e/multiarch:v1")
			want := env.image("M:m1/e2e/multiarch:v1") // id of the native platform, digest of the index
			p.mustPull(ref, want)
			img := p.status(ref)
			checkNames(t, "ImageStatus", img, []string{ref}, "")
			wantDigests := []string{want.Digest}
			if rt.instanceDigests {
				wantDigests = append(wantDigests, want.Instance)
			}
			repo := testenv.MustRepository(ref)
			for i := range wantDigests {
				wantDigests[i] = repo + "@" + wantDigests[i]
			}
			got := append([]string(nil), img.GetRepoDigests()...)
			sort.Strings(got)
			sort.Strings(wantDigests)
			if strings.Join(got, ",") != strings.Join(wantDigests, ",") {
				t.Errorf("ImageStatus(%s): repo_digests = %q, want %q", ref, got, wantDigests)
			}
		})

		t.Run("image user", func(t *testing.T) {
			p.t = t
			for _, tc := range []struct {
				path     string
				uid      int64
				hasUID   bool
				username string
			}{
				{"e2e/user-uid:v1", 1002, true, ""},
				{"e2e/user-name:v1", 0, false, "www-data"},
				{"e2e/user-uid-group:v1", 1003, true, ""},
				{"e2e/user-name-group:v1", 0, false, "www-data"},
			} {
				ref := src(tc.path)
				p.mustPull(ref, env.image("M:m1/"+tc.path))
				img := p.status(ref)
				checkNames(t, "ImageStatus", img, []string{ref}, "")
				if img == nil {
					continue
				}
				if tc.hasUID && img.GetUid().GetValue() != tc.uid {
					t.Errorf("%s: uid = %v, want %d", ref, img.GetUid(), tc.uid)
				}
				if img.GetUsername() != tc.username {
					t.Errorf("%s: username = %q, want %q", ref, img.GetUsername(), tc.username)
				}
			}
		})

		t.Run("several tags of one image", func(t *testing.T) {
			p.t = t
			refs := []string{src("e2e/tags:1"), src("e2e/tags:2"), src("e2e/tags:3")}
			want := env.image("M:m1/e2e/tags:1")
			for _, ref := range refs {
				p.mustPull(ref, want)
			}
			for _, ref := range refs {
				checkNames(t, "ImageStatus("+ref+")", p.status(ref), refs, want.Digest)
			}
			checkNames(t, "ListImages", findImage(p.list(), rt.id(want)), refs, want.Digest)
			table := p.mustCrictl("images")
			for _, tag := range []string{"1", "2", "3"} {
				if !hasImageRow(table, src("e2e/tags"), tag) {
					t.Errorf("crictl images has no row %s %s:\n%s", src("e2e/tags"), tag, table)
				}
			}
			// A ListImages filtered by an original name reaches the runtime as the image id.
			for _, ref := range refs {
				ctx, cancel := callCtx()
				resp, err := p.img.ListImages(ctx, &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: ref}}})
				cancel()
				if err != nil {
					t.Fatalf("ListImages(filter %s): %v", ref, err)
				}
				checkNames(t, "ListImages(filter "+ref+")", findImage(resp.GetImages(), rt.id(want)), refs, want.Digest)
				if rt.filtersList && len(resp.GetImages()) != 1 {
					t.Errorf("ListImages(filter %s) = %d images; %s filters, want the one", ref, len(resp.GetImages()), rt.name)
				}
			}
			// Removing by one tag removes the image and all its names (as containerd does).
			if _, stderr, err := p.crictl("rmi", refs[0]); err != nil {
				t.Fatalf("crictl rmi %s: %v %s", refs[0], err, stderr)
			}
			for _, ref := range append(refs, rt.id(want)) {
				if img := p.status(ref); img != nil {
					t.Errorf("after rmi %s: ImageStatus(%s) still finds %s %q", refs[0], ref, img.GetId(), img.GetRepoTags())
				}
			}
		})

		t.Run("one image in two repositories", func(t *testing.T) {
			p.t = t
			a, b := src("e2e/twin-a:v1"), src("e2e/twin-b:v1")
			want := env.image("M:m1/e2e/twin-a:v1")
			p.mustPull(a, want)
			p.mustPull(b, want)
			for _, ref := range []string{a, b, rt.id(want)} {
				checkNames(t, "ImageStatus("+ref+")", p.status(ref), []string{a, b}, want.Digest)
			}
			img := p.status(a)
			if img != nil {
				digests := append([]string(nil), img.GetRepoDigests()...)
				sort.Strings(digests)
				wantD := []string{testenv.MustRepository(a) + "@" + want.Digest, testenv.MustRepository(b) + "@" + want.Digest}
				if strings.Join(digests, ",") != strings.Join(wantD, ",") {
					t.Errorf("repo_digests = %q, want %q", digests, wantD)
				}
			}
			if err := p.remove(a); err != nil {
				t.Fatalf("RemoveImage(%s): %v", a, err)
			}
			if img := p.status(b); img != nil {
				t.Errorf("after removing %s, ImageStatus(%s) still finds %q", a, b, img.GetRepoTags())
			}
			if rt.has(t, rt.id(want)) {
				t.Errorf("after removing %s, %s still has %s", a, rt.name, rt.id(want))
			}
		})

		t.Run("short name via crictl", func(t *testing.T) {
			p.t = t
			want := env.image("M:hub/library/e2e-short:latest")
			out := p.mustCrictl("pull", "e2e-short")
			if !strings.Contains(out, rt.id(want)) {
				t.Errorf("crictl pull e2e-short: %q, want the id %s", out, rt.id(want))
			}
			full := "docker.io/library/e2e-short:latest"
			for _, ref := range []string{"e2e-short", "e2e-short:latest", "library/e2e-short", full} {
				checkNames(t, "ImageStatus("+ref+")", p.status(ref), []string{full}, want.Digest)
			}
			if table := p.mustCrictl("images"); !hasImageRow(table, "docker.io/library/e2e-short", "latest") {
				t.Errorf("crictl images has no row docker.io/library/e2e-short latest:\n%s", table)
			}
		})

		t.Run("lookup by repo digest", func(t *testing.T) {
			p.t = t
			ref := src("e2e/digest:v1")
			want := env.image("M:m1/e2e/digest:v1")
			p.mustPull(ref, want)
			img := p.status(ref)
			checkNames(t, "ImageStatus", img, []string{ref}, want.Digest)
			// critest "image status should support all kinds of references": every name the
			// status shows must find the same image.
			if img != nil {
				for _, n := range append(append([]string{img.GetId()}, img.GetRepoTags()...), img.GetRepoDigests()...) {
					if got := p.status(n); got == nil || got.GetId() != img.GetId() {
						t.Errorf("ImageStatus(%s) = %v, want image %s", n, got, img.GetId())
					}
				}
			}
		})
		p.t = t
	})
}

// TestRemove: crictl rmi by original name and by id removes the image from the runtime; a stale
// alias (image removed behind the proxy's back) is reported as not found.
func TestRemove(t *testing.T) {
	eachRuntime(t, func(t *testing.T, rt *criRuntime) {
		p := startProxyOn(t, rt, registriesConf(sourceRule("m1")))

		gone := func(t *testing.T, ref, id string) {
			t.Helper()
			if img := p.status(ref); img != nil {
				t.Errorf("ImageStatus(%s) after rmi = %s %q", ref, img.GetId(), img.GetRepoTags())
			}
			if img := p.status(id); img != nil {
				t.Errorf("ImageStatus(%s) after rmi = %q", id, img.GetRepoTags())
			}
			if findImage(p.list(), id) != nil {
				t.Errorf("ListImages still lists %s", id)
			}
			if rt.has(t, id) {
				t.Errorf("%s still has %s", rt.name, id)
			}
			if table := p.mustCrictl("images"); hasImageRow(table, testenv.MustRepository(ref), "v1") {
				t.Errorf("crictl images still shows %s:\n%s", ref, table)
			}
		}

		t.Run("by original name", func(t *testing.T) {
			p.t = t
			ref := sourceHost + "/e2e/rmi-name:v1"
			id := p.mustPull(ref, env.image("M:m1/e2e/rmi-name:v1"))
			if out, stderr, err := p.crictl("rmi", ref); err != nil {
				t.Fatalf("crictl rmi %s: %v\n%s%s", ref, err, out, stderr)
			}
			gone(t, ref, id)
		})

		t.Run("by id", func(t *testing.T) {
			p.t = t
			ref := sourceHost + "/e2e/rmi-id:v1"
			want := env.image("M:m1/e2e/rmi-id:v1")
			id := p.mustPull(ref, want)
			if out, stderr, err := p.crictl("rmi", id); err != nil {
				t.Fatalf("crictl rmi %s: %v\n%s%s", id, err, out, stderr)
			}
			gone(t, ref, id)
			// Pulled again, it is named as before.
			p.mustPull(ref, want)
			checkNames(t, "ImageStatus after a second pull", p.status(ref), []string{ref}, want.Digest)
		})

		t.Run("absent image", func(t *testing.T) {
			p.t = t
			if err := p.remove(sourceHost + "/e2e/never-pulled:v1"); err != nil {
				t.Errorf("RemoveImage of an absent image: %v; CRI wants no error", err)
			}
		})

		t.Run("stale alias", func(t *testing.T) {
			p.t = t
			ref := sourceHost + "/e2e/rmi-name:v1"
			id := p.mustPull(ref, env.image("M:m1/e2e/rmi-name:v1"))
			rt.reset(t) // behind the proxy's back
			if img := p.status(ref); img != nil {
				t.Errorf("ImageStatus(%s) after the runtime lost the image = %s %q; want not found", ref, img.GetId(), img.GetRepoTags())
			}
			if findImage(p.list(), id) != nil {
				t.Errorf("ListImages lists %s, which the runtime no longer has", id)
			}
		})
		p.t = t
	})
}

// TestAliasesSurviveRestart: the original names persist in --state-dir across a restart; the
// proxy stops gracefully on SIGTERM and removes its socket.
func TestAliasesSurviveRestart(t *testing.T) {
	eachRuntime(t, func(t *testing.T, rt *criRuntime) {
		p := startProxyOn(t, rt, registriesConf(sourceRule("m1")))
		ref := sourceHost + "/e2e/restart:v1"
		want := env.image("M:m1/e2e/restart:v1")
		id := p.mustPull(ref, want)
		checkNames(t, "ImageStatus before the restart", p.status(ref), []string{ref}, want.Digest)

		p.restart()

		checkNames(t, "ImageStatus after the restart", p.status(ref), []string{ref}, want.Digest)
		checkNames(t, "ListImages after the restart", findImage(p.list(), id), []string{ref}, want.Digest)
		if table := p.mustCrictl("images"); !hasImageRow(table, testenv.MustRepository(ref), "v1") || strings.Contains(table, env.mirror.host) {
			t.Errorf("crictl images after the restart:\n%s", table)
		}
		if n := p.metrics().Sum("cri_mirror_aliases", nil); n < 1 {
			t.Errorf("cri_mirror_aliases after the restart = %v, want >= 1", n)
		}
		if out, stderr, err := p.crictl("rmi", ref); err != nil {
			t.Fatalf("crictl rmi %s after the restart: %v\n%s%s", ref, err, out, stderr)
		}
		if rt.has(t, id) {
			t.Errorf("%s still has %s after rmi by original name", rt.name, id)
		}
	})
}
