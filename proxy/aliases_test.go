package proxy

import (
	"io"
	"slices"
	"sort"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/fakecri"
)

const (
	origTag   = "gcr.io/x/y:t"
	mirrorTag = "127.0.0.1:5000/mirror/gcr.io/x/y:t"
)

// pullMirrored pulls gcr.io/x/y:t, served by its mirror, and returns the id.
func pullMirrored(h *harness) string {
	h.rt.Publish(mirrorTag, "y")
	return h.mustPull(origTag)
}

// wantOriginalView asserts img looks exactly as if the runtime had pulled
// gcr.io/x/y:t itself.
func wantOriginalView(t *testing.T, how string, img *runtimeapi.Image, id string) {
	t.Helper()
	if img == nil {
		t.Fatalf("%s: image not found", how)
	}
	if img.Id != id {
		t.Errorf("%s: id = %s, want %s", how, img.Id, id)
	}
	if !slices.Equal(img.RepoTags, []string{origTag}) {
		t.Errorf("%s: repo_tags = %q, want exactly [%s]", how, img.RepoTags, origTag)
	}
	want := []string{"gcr.io/x/y@" + fakecri.DigestOf("y")}
	if !slices.Equal(img.RepoDigests, want) {
		t.Errorf("%s: repo_digests = %q, want %q", how, img.RepoDigests, want)
	}
}

func TestStatusShowsOriginalName(t *testing.T) {
	h := newHarness(t)
	id := pullMirrored(h)
	for _, name := range []string{origTag, id, mirrorTag, "gcr.io/x/y@" + fakecri.DigestOf("y"), "127.0.0.1:5000/mirror/gcr.io/x/y@" + fakecri.DigestOf("y")} {
		wantOriginalView(t, "ImageStatus("+name+")", h.status(name), id)
	}
	if img := h.status("gcr.io/x/y:other"); img != nil {
		t.Errorf("another tag of the repository must not resolve: %v", img)
	}
	if img := h.status("gcr.io/x/y@sha256:" + strings.Repeat("0", 64)); img != nil {
		t.Errorf("another digest of the repository must not resolve: %v", img)
	}
	_, err := h.images.ImageStatus(ctx(t), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("empty spec: %v", err)
	}
}

func TestStatusShortNames(t *testing.T) {
	h := newHarness(t)
	h.rt.Publish("mirror-a.test/hub/library/nginx:latest", "nginx")
	id := h.mustPull("nginx")
	for _, name := range []string{"nginx", "nginx:latest", "library/nginx", "docker.io/library/nginx:latest"} {
		img := h.status(name)
		if img.GetId() != id || !slices.Equal(img.GetRepoTags(), []string{"docker.io/library/nginx:latest"}) {
			t.Errorf("ImageStatus(%s) = %v", name, img)
		}
	}
}

func TestListShowsOriginalNames(t *testing.T) {
	h := newHarness(t)
	id := pullMirrored(h)
	h.rt.Publish("registry.example.com/plain:1", "plain")
	plainID := h.mustPull("registry.example.com/plain:1")

	images := h.list("")
	sort.Slice(images, func(i, j int) bool { return images[i].Id == id })
	if len(images) != 2 {
		t.Fatalf("ListImages = %v", images)
	}
	wantOriginalView(t, "ListImages", images[0], id)
	if images[1].Id != plainID || !slices.Equal(images[1].RepoTags, []string{"registry.example.com/plain:1"}) {
		t.Errorf("unaliased image changed: %v", images[1])
	}

	// The fake filters like kubelet would expect a runtime to; the original
	// name must reach it as something it knows.
	filtered := h.list(origTag)
	if len(filtered) == 0 {
		t.Fatal("ListImages filtered by original name found nothing")
	}
	for _, img := range filtered {
		if img.Id == id {
			wantOriginalView(t, "ListImages(filter)", img, id)
		}
	}

	stream, err := h.images.StreamImages(ctx(t), &runtimeapi.StreamImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var streamed []*runtimeapi.Image
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("StreamImages: %v", err)
		}
		streamed = append(streamed, resp.Images...)
	}
	for _, img := range streamed {
		if img.Id == id {
			wantOriginalView(t, "StreamImages", img, id)
		}
	}
}

func TestTwoOriginalsOneImage(t *testing.T) {
	h := newHarness(t)
	h.rt.Publish("mirror-a.test/hub/library/app:1", "app")
	h.rt.Publish("mirror-a.test/hub/library/app:stable", "app")
	id := h.mustPull("app:1")
	if id2 := h.mustPull("app:stable"); id2 != id {
		t.Fatalf("same content, different ids %s %s", id, id2)
	}
	img := h.status("app:1")
	want := []string{"docker.io/library/app:1", "docker.io/library/app:stable"}
	if !slices.Equal(img.RepoTags, want) {
		t.Errorf("repo_tags = %q, want %q", img.RepoTags, want)
	}
	if want := []string{"docker.io/library/app@" + fakecri.DigestOf("app")}; !slices.Equal(img.RepoDigests, want) {
		t.Errorf("repo_digests = %q, want %q", img.RepoDigests, want)
	}
}

func TestRemoveDropsAliases(t *testing.T) {
	for _, by := range []string{"original", "mirror", "id"} {
		t.Run(by, func(t *testing.T) {
			h := newHarness(t)
			id := pullMirrored(h)
			name := map[string]string{"original": origTag, "mirror": mirrorTag, "id": id}[by]
			if _, err := h.images.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: name}}); err != nil {
				t.Fatal(err)
			}
			if img := h.status(origTag); img != nil {
				t.Errorf("image still visible under its original name: %v", img)
			}
			if img := h.status(id); img != nil {
				t.Errorf("image still in the runtime: %v", img)
			}
			if n := h.store.Len(); n != 0 {
				t.Errorf("%d aliases left: %v", n, h.store.ByImage(id))
			}
			// Idempotent, as CRI requires.
			if _, err := h.images.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: name}}); err != nil {
				t.Errorf("second remove: %v", err)
			}
		})
	}
}

func TestStaleAliasIsDropped(t *testing.T) {
	h := newHarness(t)
	id := pullMirrored(h)
	h.rt.Forget(id) // removed behind the proxy's back
	if img := h.status(origTag); img != nil {
		t.Fatalf("stale alias answered: %v", img)
	}
	if _, ok := h.store.Get(origTag); ok {
		t.Error("stale alias kept")
	}
}

func TestAliasesSurviveRestart(t *testing.T) {
	h := newHarness(t)
	id := pullMirrored(h)
	h.restart()
	wantOriginalView(t, "after restart", h.status(origTag), id)
	if got := h.rt.PulledRefs(); len(got) != 1 {
		t.Errorf("restart caused pulls: %v", got)
	}
}

func TestSourcePullReplacesAlias(t *testing.T) {
	h := newHarness(t)
	pullMirrored(h)
	h.rt.Fail(mirrorTag, status.Error(codes.Unavailable, "mirror down"))
	h.rt.Publish(origTag, "y2")
	id2 := h.mustPull(origTag)
	if _, ok := h.store.Get(origTag); ok {
		t.Error("alias kept after the source served the original name")
	}
	if img := h.status(origTag); img.GetId() != id2 {
		t.Errorf("ImageStatus after source pull = %v, want id %s", img, id2)
	}
}

func TestRepoOf(t *testing.T) {
	for in, want := range map[string]string{
		"docker.io/library/nginx:1.27":             "docker.io/library/nginx",
		"127.0.0.1:5000/mirror/x:t":                "127.0.0.1:5000/mirror/x",
		"127.0.0.1:5000/mirror/x":                  "127.0.0.1:5000/mirror/x",
		"gcr.io/x/y@sha256:abc":                    "gcr.io/x/y",
		"localhost:5000/a/b:c@sha256:abc":          "localhost:5000/a/b",
		"registry.example.com:443/team/app:v1.2.3": "registry.example.com:443/team/app",
	} {
		if got := repoOf(in); got != want {
			t.Errorf("repoOf(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestStatusOfUnaliasedImageIsTheRuntimes(t *testing.T) {
	h := newHarness(t)
	h.rt.Publish("registry.example.com/plain:1", "plain")
	id := h.mustPull("registry.example.com/plain:1")
	for _, name := range []string{"registry.example.com/plain:1", id} {
		img := h.status(name)
		if img.GetId() != id || !slices.Equal(img.GetRepoTags(), []string{"registry.example.com/plain:1"}) ||
			!slices.Equal(img.GetRepoDigests(), []string{"registry.example.com/plain@" + fakecri.DigestOf("plain")}) || img.GetSize() != 1234 {
			t.Errorf("ImageStatus(%s) = %v", name, img)
		}
	}
	if img := h.status("registry.example.com/absent:1"); img != nil {
		t.Errorf("absent image: %v", img)
	}
}

func TestBytesField(t *testing.T) {
	req := &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "docker.io/library/nginx:1", Annotations: map[string]string{"a": "b"}}, Verbose: true}
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(bytesField(bytesField(b, 1), 1)); got != "docker.io/library/nginx:1" {
		t.Errorf("image name read from the wire = %q", got)
	}
	if got := bytesField(b, 7); got != nil {
		t.Errorf("absent field = %q", got)
	}
	if got := bytesField([]byte{0xff, 0xff}, 1); got != nil {
		t.Errorf("garbage = %q", got)
	}
}

// CRI-O answers PullImage with a digest reference in the repository it
// pulled, not the image id, and its ids are bare hex. Every name must still
// be the original one, and the caller must never see the mirror's name.
func TestNamesInFrontOfCRIO(t *testing.T) {
	h := newHarness(t)
	h.rt.CRIO = true
	ref := pullMirrored(h)
	id := strings.TrimPrefix(fakecri.IDOf("y"), "sha256:")
	if ref != id {
		t.Errorf("PullImage image_ref = %q, want the image id %s", ref, id)
	}
	if a, _ := h.store.Get(origTag); a.ImageID != id {
		t.Errorf("alias records image id %q, want %s", a.ImageID, id)
	}
	for _, name := range []string{origTag, id, mirrorTag, "gcr.io/x/y@" + fakecri.DigestOf("y")} {
		wantOriginalView(t, "ImageStatus("+name+")", h.status(name), id)
	}
	var listed *runtimeapi.Image
	for _, img := range h.list("") {
		if img.Id == id {
			listed = img
		}
	}
	wantOriginalView(t, "ListImages", listed, id)

	// Pulled from the source, the runtime's answer names the original
	// repository: it is passed on as it is.
	h.rt.Publish("registry.example.com/plain:1", "plain")
	if got, want := h.mustPull("registry.example.com/plain:1"), "registry.example.com/plain@"+fakecri.DigestOf("plain"); got != want {
		t.Errorf("source pull image_ref = %q, want the runtime's %q", got, want)
	}

	if _, err := h.images.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: origTag}}); err != nil {
		t.Fatal(err)
	}
	if img := h.status(id); img != nil {
		t.Errorf("RemoveImage(%s) left the image in the runtime: %v", origTag, img)
	}
	if n := h.store.Len(); n != 0 {
		t.Errorf("%d aliases left: %v", n, h.store.ByImage(id))
	}
}

// An alias recorded with CRI-O's PullImage answer in place of the image id
// (as earlier versions did) gets the id on its first ImageStatus, and the
// image shows under its original name from then on.
func TestAliasWithNameForIDIsFixed(t *testing.T) {
	h := newHarness(t)
	h.rt.CRIO = true
	h.rt.Publish(mirrorTag, "y")
	if _, err := h.rt.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: mirrorTag}}); err != nil {
		t.Fatal(err)
	}
	nameForID := "127.0.0.1:5000/mirror/gcr.io/x/y@" + fakecri.DigestOf("y")
	if err := h.store.Put(store.Alias{Name: origTag, ImageID: nameForID, Mirror: mirrorTag}); err != nil {
		t.Fatal(err)
	}
	id := strings.TrimPrefix(fakecri.IDOf("y"), "sha256:")
	wantOriginalView(t, "ImageStatus("+origTag+")", h.status(origTag), id)
	if a, _ := h.store.Get(origTag); a.ImageID != id {
		t.Errorf("alias image id = %q, want %s", a.ImageID, id)
	}
	var listed *runtimeapi.Image
	for _, img := range h.list("") {
		if img.Id == id {
			listed = img
		}
	}
	wantOriginalView(t, "ListImages", listed, id)
}

// TestStatusFollowsAliasChanges: what ImageStatus learnt about a name (no
// alias, an alias, a digest of a repository without aliases) is remembered
// only until the alias table changes: asked before and after each change,
// every name gets the answer of the table as it is now.
func TestStatusFollowsAliasChanges(t *testing.T) {
	h := newHarness(t)
	digestRef := "gcr.io/x/y@" + fakecri.DigestOf("y")
	ask := func() {
		for range 3 { // enough lookups for the cache to move names to its lock-free map
			for _, name := range []string{origTag, digestRef, "nginx:1"} {
				h.status(name)
			}
		}
	}
	ask()
	for _, name := range []string{origTag, digestRef} {
		if img := h.status(name); img != nil {
			t.Fatalf("ImageStatus(%s) before any pull = %v, want none", name, img)
		}
	}
	id := pullMirrored(h)
	for _, name := range []string{origTag, digestRef} {
		wantOriginalView(t, "after the pull: ImageStatus("+name+")", h.status(name), id)
	}
	ask()
	if err := h.store.Delete(origTag); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{origTag, digestRef} {
		if img := h.status(name); img != nil {
			t.Errorf("ImageStatus(%s) after its alias was deleted = %v, want none", name, img)
		}
	}
	if err := h.store.Put(store.Alias{Name: origTag, ImageID: id, Mirror: mirrorTag}); err != nil {
		t.Fatal(err)
	}
	wantOriginalView(t, "after the alias came back: ImageStatus("+origTag+")", h.status(origTag), id)

	// A second original name of the image: the answer by the first name
	// (translated before, and kept) shows it too.
	second := "gcr.io/x/y:second"
	if err := h.store.Put(store.Alias{Name: second, ImageID: id, Mirror: mirrorTag}); err != nil {
		t.Fatal(err)
	}
	if img := h.status(origTag); img == nil || !slices.Contains(img.RepoTags, second) {
		t.Errorf("ImageStatus(%s) after a second alias of its image = %v, want %s among its tags", origTag, img, second)
	}
}
