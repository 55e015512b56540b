package proxy

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/fakecri"
)

func createRequest(image, user string) *runtimeapi.CreateContainerRequest {
	return &runtimeapi.CreateContainerRequest{
		PodSandboxId: "pod-1",
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "c", Attempt: 2},
			Image:    &runtimeapi.ImageSpec{Image: image, UserSpecifiedImage: user, Annotations: map[string]string{"a": "b"}},
			Command:  []string{"sh", "-c", "top"},
			Labels:   map[string]string{"l": "v"},
		},
		SandboxConfig: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Uid: "u", Namespace: "n"}},
	}
}

// A container created by the name its image was pulled as (crictl create,
// critest) runs the image the proxy pulled from a mirror, which the runtime
// knows only under the mirror's name: the runtime is asked by image id.
func TestCreateContainerByOriginalName(t *testing.T) {
	for _, name := range []string{"docker.io/library/app:1", "app:1", "docker.io/library/app@" + fakecri.DigestOf("app")} {
		h := newHarness(t)
		h.rt.Publish("mirror-a.test/hub/library/app:1", "app")
		id := h.mustPull("app:1")

		req := createRequest(name, "")
		resp, err := h.runtime.CreateContainer(ctx(t), req)
		if err != nil {
			t.Fatalf("CreateContainer %s: %v", name, err)
		}
		got := h.rt.CreateRequests()
		if len(got) != 1 {
			t.Fatalf("CreateContainer %s: the runtime got %d requests", name, len(got))
		}
		// The image id in place of the name, the name kept as the pod's;
		// everything else as sent.
		want := proto.Clone(req).(*runtimeapi.CreateContainerRequest)
		want.Config.Image.Image, want.Config.Image.UserSpecifiedImage = id, name
		if !proto.Equal(got[0], want) {
			t.Errorf("CreateContainer %s: the runtime got\n%v\nwant\n%v", name, got[0], want)
		}
		// Its status shows the original name, as for a container kubelet
		// created.
		if st := h.containerStatus(resp.ContainerId).Status; st.Image.Image != "docker.io/library/app:1" || st.Image.UserSpecifiedImage != name {
			t.Errorf("CreateContainer %s: status image = %v, want the original name", name, st.Image)
		}
	}
}

// What the runtime resolves by itself goes through as sent: an image id, a
// name pulled without a mirror, a user_specified_image already set.
func TestCreateContainerPassesThrough(t *testing.T) {
	h := newHarness(t)
	h.rt.Publish("mirror-a.test/hub/library/app:1", "app")
	h.rt.Publish("registry.test/own:1", "own")
	id := h.mustPull("app:1")
	h.mustPull("registry.test/own:1")

	for _, req := range []*runtimeapi.CreateContainerRequest{
		createRequest(id, "docker.io/library/app:1"),
		createRequest("registry.test/own:1", ""),
		createRequest("mirror-a.test/hub/library/app:1", ""),
	} {
		if _, err := h.runtime.CreateContainer(ctx(t), req); err != nil {
			t.Fatalf("CreateContainer %s: %v", req.Config.Image.Image, err)
		}
		got := h.rt.CreateRequests()
		if last := got[len(got)-1]; !proto.Equal(last, req) {
			t.Errorf("CreateContainer %s: the runtime got\n%v\nwant it as sent", req.Config.Image.Image, last)
		}
	}

	// A name the alias keeps for the pod stays the pod's.
	req := createRequest("docker.io/library/app:1", "app:1")
	if _, err := h.runtime.CreateContainer(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	got := h.rt.CreateRequests()
	if last := got[len(got)-1].Config.Image; last.Image != id || last.UserSpecifiedImage != "app:1" {
		t.Errorf("the runtime got image %q, user_specified_image %q; want %q, %q", last.Image, last.UserSpecifiedImage, id, "app:1")
	}
}

// An alias whose image the runtime no longer has is dropped, and the
// runtime answers for the name: the caller sees the runtime's NotFound.
func TestCreateContainerStaleAlias(t *testing.T) {
	h := newHarness(t)
	h.rt.Publish("mirror-a.test/hub/library/app:1", "app")
	id := h.mustPull("app:1")
	h.rt.Forget(id)

	_, err := h.runtime.CreateContainer(ctx(t), createRequest("docker.io/library/app:1", ""))
	if status.Code(err) != codes.NotFound {
		t.Fatalf("CreateContainer of a removed image: %v, want NotFound", err)
	}
	got := h.rt.CreateRequests()
	if len(got) != 1 || got[0].Config.Image.Image != "docker.io/library/app:1" {
		t.Errorf("the runtime got %v, want the name as sent", got)
	}
	if _, ok := h.store.Get("docker.io/library/app:1"); ok {
		t.Error("the stale alias is still there")
	}
}
