package proxy

import (
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/fakecri"
)

func (h *harness) listContainers(c runtimeapi.RuntimeServiceClient) *runtimeapi.ListContainersResponse {
	h.t.Helper()
	resp, err := c.ListContainers(ctx(h.t), &runtimeapi.ListContainersRequest{})
	if err != nil {
		h.t.Fatalf("ListContainers: %v", err)
	}
	return resp
}

func TestListContainersShowsOriginalNames(t *testing.T) {
	h := newHarness(t)
	h.rt.ListsByNames = true
	h.rt.Publish("mirror-a.test/hub/library/app:1", "app")
	h.rt.Publish("registry.example.com/plain:1", "plain")
	app := h.mustPull("app:1")
	plain := h.mustPull("registry.example.com/plain:1")
	h.rt.Create(app, "app:1")
	h.rt.Create(plain, "registry.example.com/plain:1")

	direct := h.listContainers(runtimeapi.NewRuntimeServiceClient(h.rtConn))
	got := h.listContainers(h.runtime)
	if len(got.Containers) != 2 {
		t.Fatalf("ListContainers = %v", got)
	}
	c := got.Containers[0]
	if c.Image.Image != "docker.io/library/app:1" || c.ImageRef != "docker.io/library/app@"+fakecri.DigestOf("app") {
		t.Errorf("mirrored container listed as %q %q, want its original names", c.Image.Image, c.ImageRef)
	}
	if c.Labels["io.kubernetes.pod.name"] != "p-ctr0" || c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("listing changed beyond image names: %v", c)
	}
	if !proto.Equal(got.Containers[1], direct.Containers[1]) {
		t.Errorf("container without a mirror changed:\n got %v\nwant %v", got.Containers[1], direct.Containers[1])
	}
}

func TestListContainersByImageIDUntouched(t *testing.T) {
	h := newHarness(t)
	h.rt.ReportIDs = true
	h.rt.Publish("mirror-a.test/hub/library/app:1", "app")
	h.rt.Create(h.mustPull("app:1"), "app:1")
	// containerd lists the image id a container was created with: the same
	// answer whether the image came from a mirror or not.
	if got, want := h.listContainers(h.runtime), h.listContainers(runtimeapi.NewRuntimeServiceClient(h.rtConn)); !proto.Equal(got, want) {
		t.Errorf("listing by image id changed:\n got %v\nwant %v", got, want)
	}
}
