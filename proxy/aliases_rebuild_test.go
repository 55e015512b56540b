package proxy

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/fakecri"
)

// runtimePull puts ref into the fake runtime directly, as a pull that did
// not go through this proxy (or went through one whose table is lost).
func (h *harness) runtimePull(ref, content string) string {
	h.t.Helper()
	h.rt.Publish(ref, content)
	resp, err := h.rt.PullImage(ctx(h.t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.GetImageRef()
}

// TestRebuildAliases: the state directory is wiped under a proxy that had
// pulled from mirrors. The new proxy maps the runtime's mirror names back
// through the rules: unique ones get their alias again, ambiguous ones are
// left alone and counted.
func TestRebuildAliases(t *testing.T) {
	h := newHarness(t)
	app := h.runtimePull("127.0.0.1:5000/mirror/gcr.io/x/app:v1", "app")
	h.runtimePull("mirror-a.test/hub/library/one:1", "one")
	dig := h.runtimePull("mirror-b.test/library/dig@"+fakecri.DigestOf("dig"), "dig") // pulled by digest: no tag
	// One original, two different images under two mirrors: which is it?
	h.runtimePull("mirror-a.test/hub/library/two:1", "two-a")
	h.runtimePull("mirror-b.test/library/two:1", "two-b")
	// The runtime has the original name itself: no alias needed.
	h.runtimePull("mirror-b.test/library/three:1", "three")
	h.runtimePull("docker.io/library/three:1", "three")
	h.runtimePull("unrelated.test/x:1", "x")

	// Wipe the state directory.
	h.stop()
	if err := os.RemoveAll(h.dbPath); err != nil {
		t.Fatal(err)
	}
	h.start()
	if h.store.Len() != 0 {
		t.Fatalf("a wiped table has %d aliases", h.store.Len())
	}
	// A pull recorded before the rebuild runs is newer and stays.
	h.rt.Publish("mirror-a.test/hub/library/one:1", "one-new")
	oneNew := h.mustPull("docker.io/library/one:1")

	restored, ambiguous, err := h.srv.RebuildAliases(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	// app and dig; one:1 was recorded by the pull (and its old image lost the name).
	if restored != 2 || ambiguous != 1 {
		t.Errorf("RebuildAliases = %d restored, %d ambiguous; want 2, 1", restored, ambiguous)
	}
	for name, want := range map[string]string{
		"gcr.io/x/app:v1":                                  app,
		"docker.io/library/one:1":                          oneNew,
		"docker.io/library/dig@" + fakecri.DigestOf("dig"): dig,
	} {
		a, ok := h.store.Get(name)
		if !ok || a.ImageID != want {
			t.Errorf("alias %s = %+v, %v; want image %s", name, a, ok, want)
		}
	}
	for _, name := range []string{"docker.io/library/two:1", "docker.io/library/three:1"} {
		if a, ok := h.store.Get(name); ok {
			t.Errorf("alias %s recorded (%+v), want none", name, a)
		}
	}
	if img := h.status("gcr.io/x/app:v1"); img.GetId() != app || !slices.Contains(img.GetRepoTags(), "gcr.io/x/app:v1") {
		t.Errorf("ImageStatus(original) after the rebuild = %v", img)
	}
	for result, want := range map[string]float64{"restored": 2, "ambiguous": 1} {
		if got := counterValue(t, h.registry, "cri_mirror_aliases_rebuilt_total", map[string]string{"result": result}); got != want {
			t.Errorf("cri_mirror_aliases_rebuilt_total{result=%q} = %v, want %v", result, got, want)
		}
	}
}

// TestListImagesPrunesStaleAliases: images removed behind the proxy's back
// lose their aliases on the next complete listing; the alias gauge follows.
func TestListImagesPrunesStaleAliases(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  *runtimeapi.ListImagesRequest
	}{
		{"no filter", &runtimeapi.ListImagesRequest{}},
		// crictl images sends a filter without an image: still everything.
		{"empty filter", &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.rt.Publish("127.0.0.1:5000/mirror/gcr.io/x/a:1", "a")
			h.rt.Publish("127.0.0.1:5000/mirror/gcr.io/x/b:1", "b")
			a := h.mustPull("gcr.io/x/a:1")
			h.mustPull("gcr.io/x/b:1")
			if h.store.Len() != 2 {
				t.Fatalf("%d aliases after two mirror pulls", h.store.Len())
			}
			h.rt.Forget(a)

			h.list("gcr.io/x/b:1") // a filtered listing says nothing about other images
			time.Sleep(50 * time.Millisecond)
			if h.store.Len() != 2 {
				t.Fatalf("a filtered listing pruned: %d aliases left", h.store.Len())
			}
			if _, err := h.images.ListImages(ctx(t), tc.req); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for h.store.Len() != 1 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if _, ok := h.store.Get("gcr.io/x/a:1"); ok || h.store.Len() != 1 {
				t.Errorf("after the listing: %d aliases, gcr.io/x/a:1 present = %v; want only gcr.io/x/b:1", h.store.Len(), ok)
			}
		})
	}
}

// TestMirrorNamePulledByItself (issue 15 item 8): a mirror reference pulled
// by its own name stays visible beside the original that was pulled through
// it, in either order, in ImageStatus and ListImages, after a restart too, in
// front of containerd and of CRI-O (which answers the pull of the mirror's
// name with a digest reference, not the id).
func TestMirrorNamePulledByItself(t *testing.T) {
	const original, mirrored = "gcr.io/x/app:v1", "127.0.0.1:5000/mirror/gcr.io/x/app:v1"
	for _, crio := range []bool{false, true} {
		for _, order := range [][]string{{original, mirrored}, {mirrored, original}} {
			t.Run(fmt.Sprintf("crio=%v first %s", crio, order[0]), func(t *testing.T) {
				h := newHarness(t)
				h.rt.CRIO = crio
				h.rt.Publish(mirrored, "app")
				id := fakecri.IDOf("app")
				if crio {
					id = strings.TrimPrefix(id, "sha256:")
				}
				for _, ref := range order {
					h.mustPull(ref)
				}
				check := func(when string) {
					t.Helper()
					for _, ref := range order {
						if img := h.status(ref); img.GetId() != id || !slices.Contains(img.GetRepoTags(), original) || !slices.Contains(img.GetRepoTags(), mirrored) {
							t.Errorf("%s: ImageStatus(%s) = %s %q, want %s with both %s and %s", when, ref, img.GetId(), img.GetRepoTags(), id, original, mirrored)
						}
					}
					var listed *runtimeapi.Image
					for _, img := range h.list("") {
						if img.GetId() == id {
							listed = img
						}
					}
					if !slices.Contains(listed.GetRepoTags(), original) || !slices.Contains(listed.GetRepoTags(), mirrored) {
						t.Errorf("%s: ListImages tags = %q, want both", when, listed.GetRepoTags())
					}
				}
				check("after the pulls")
				h.restart()
				check("after a restart")
			})
		}
	}
	// A mirror pull alone still hides the mirror's name.
	h := newHarness(t)
	h.rt.Publish(mirrored, "app")
	h.mustPull(original)
	if tags := h.status(original).GetRepoTags(); !slices.Equal(tags, []string{original}) {
		t.Errorf("after a mirror pull only: tags = %q, want only %s", tags, original)
	}
}
