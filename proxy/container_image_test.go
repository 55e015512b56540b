package proxy

import (
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/fakecri"
)

func TestOriginals(t *testing.T) {
	aliases, err := store.Open(filepath.Join(t.TempDir(), "aliases.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { aliases.Close() })
	dA, dC := fakecri.DigestOf("a"), fakecri.DigestOf("c")
	idA, idC := fakecri.IDOf("a"), fakecri.IDOf("c")
	for _, a := range []store.Alias{
		{Name: "docker.io/library/app:1", ImageID: idA, Mirror: "mirror-a.test/hub/library/app:1"},
		{Name: "docker.io/library/app@" + dA, ImageID: idA, Mirror: "mirror-b.test/library/app@" + dA},
		// One mirror name standing for two originals.
		{Name: "docker.io/team/x:1", ImageID: idC, Mirror: "m.test/shared/x:1"},
		{Name: "docker.io/other/x:1", ImageID: idC, Mirror: "m.test/shared/x:1"},
	} {
		if err := aliases.Put(a); err != nil {
			t.Fatal(err)
		}
	}
	s := New(nil, nil, aliases)

	for _, c := range []struct {
		name     string
		in, want imageNames
	}{
		{"containerd, pulled by tag",
			imageNames{image: "mirror-a.test/hub/library/app:1", ref: "mirror-a.test/hub/library/app@" + dA},
			imageNames{image: "docker.io/library/app:1", ref: "docker.io/library/app@" + dA}},
		{"containerd, pulled by digest",
			imageNames{image: idA, ref: "mirror-b.test/library/app@" + dA},
			imageNames{image: idA, ref: "docker.io/library/app@" + dA}},
		{"image id reported: any digest under a mirror repository of the image",
			imageNames{image: idA, ref: "mirror-a.test/hub/library/app@" + dC, id: idA},
			imageNames{image: idA, ref: "docker.io/library/app@" + dC, id: idA}},
		{"image spec image_ref",
			imageNames{image: idA, specRef: "mirror-a.test/hub/library/app:1"},
			imageNames{image: idA, specRef: "docker.io/library/app:1"}},
		{"ids stay ids",
			imageNames{image: idA, ref: idA, id: idA},
			imageNames{image: idA, ref: idA, id: idA}},
		{"no mirror concerned",
			imageNames{image: "registry.example.com/plain:1", ref: "registry.example.com/plain@" + dA},
			imageNames{image: "registry.example.com/plain:1", ref: "registry.example.com/plain@" + dA}},
		{"a mirror name no alias stands for is not invented",
			imageNames{image: "mirror-a.test/hub/library/app:2", ref: "mirror-a.test/hub/library/app@" + dC},
			imageNames{image: "mirror-a.test/hub/library/app:2", ref: "mirror-a.test/hub/library/app@" + dC}},
		{"two originals: the pod's own name wins",
			imageNames{image: "m.test/shared/x:1", ref: "m.test/shared/x@" + dC, user: "other/x:1"},
			imageNames{image: "docker.io/other/x:1", ref: "docker.io/other/x@" + dC, user: "other/x:1"}},
		{"two originals, the other one",
			imageNames{image: "m.test/shared/x:1", ref: "m.test/shared/x@" + dC, user: "docker.io/team/x:1"},
			imageNames{image: "docker.io/team/x:1", ref: "docker.io/team/x@" + dC, user: "docker.io/team/x:1"}},
		{"empty", imageNames{}, imageNames{}},
	} {
		got, changed := s.originals(c.in)
		if got != c.want || changed != (c.in != c.want) {
			t.Errorf("%s:\n got %+v (changed %v)\nwant %+v", c.name, got, changed, c.want)
		}
	}

	// Without the pod's name, one of the originals, the same for image and
	// image_ref.
	got, _ := s.originals(imageNames{image: "m.test/shared/x:1", ref: "m.test/shared/x@" + dC})
	if repoOf(got.image)+"@"+dC != got.ref || !strings.HasPrefix(got.image, "docker.io/") {
		t.Errorf("two originals without the pod's name: %+v", got)
	}
}

func TestRawNamesChange(t *testing.T) {
	h := newHarness(t)
	h.rt.Publish("mirror-a.test/hub/library/app:1", "app")
	h.mustPull("app:1")
	s := h.srv
	mirrored := &runtimeapi.ContainerStatus{Id: "c", Image: &runtimeapi.ImageSpec{Image: "mirror-a.test/hub/library/app:1"}}
	plain := &runtimeapi.ContainerStatus{Id: "c", Image: &runtimeapi.ImageSpec{Image: "registry.example.com/plain:1"}}
	for _, c := range []struct {
		name string
		msg  proto.Message
		want bool
	}{
		{"status naming a mirror", &runtimeapi.ContainerStatusResponse{Status: mirrored}, true},
		{"status naming no mirror", &runtimeapi.ContainerStatusResponse{Status: plain}, false},
		{"listing, second entry naming a mirror", &runtimeapi.ListContainersResponse{Containers: []*runtimeapi.Container{
			{Id: "a", Image: &runtimeapi.ImageSpec{Image: "registry.example.com/plain:1"}},
			{Id: "b", ImageRef: "mirror-a.test/hub/library/app:1"}}}, true},
		{"event naming a mirror", &runtimeapi.ContainerEventResponse{ContainerId: "c", ContainersStatuses: []*runtimeapi.ContainerStatus{plain, mirrored}}, true},
		{"event naming no mirror", &runtimeapi.ContainerEventResponse{ContainerId: "c", ContainersStatuses: []*runtimeapi.ContainerStatus{plain}}, false},
	} {
		b, err := proto.Marshal(c.msg)
		if err != nil {
			t.Fatal(err)
		}
		var got bool
		switch c.msg.(type) {
		case *runtimeapi.ContainerStatusResponse:
			got = s.rawNamesChange(bytesField(b, 1), containerStatusFields)
		case *runtimeapi.ListContainersResponse:
			got = s.anyRawNamesChange(b, 1, containerFields)
		case *runtimeapi.ContainerEventResponse:
			got = s.anyRawNamesChange(b, 5, containerStatusFields)
		}
		if got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	// Truncated or garbage bytes: no answer to translate, no panic.
	b, _ := proto.Marshal(&runtimeapi.ContainerEventResponse{ContainersStatuses: []*runtimeapi.ContainerStatus{mirrored}})
	for i := range len(b) {
		s.anyRawNamesChange(b[:i], 5, containerStatusFields)
	}
	if s.anyRawNamesChange([]byte{0xff, 0xff, 0xff}, 5, containerStatusFields) {
		t.Error("garbage names a mirror")
	}
}
