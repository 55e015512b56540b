package proxy

import (
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/fakecri"
)

func (h *harness) containerStatus(id string) *runtimeapi.ContainerStatusResponse {
	h.t.Helper()
	resp, err := h.runtime.ContainerStatus(ctx(h.t), &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		h.t.Fatalf("ContainerStatus %s: %v", id, err)
	}
	return resp
}

// directStatus asks the runtime itself, behind the proxy.
func (h *harness) directStatus(id string) *runtimeapi.ContainerStatusResponse {
	h.t.Helper()
	resp, err := runtimeapi.NewRuntimeServiceClient(h.rtConn).ContainerStatus(ctx(h.t), &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		h.t.Fatalf("runtime ContainerStatus %s: %v", id, err)
	}
	return resp
}

func TestContainerStatusShowsOriginalNames(t *testing.T) {
	for _, reportIDs := range []bool{false, true} {
		h := newHarness(t)
		h.rt.ReportIDs = reportIDs
		h.rt.Publish("mirror-a.test/hub/library/app:1", "app")
		id := h.mustPull("app:1")
		ctr := h.rt.Create(id, "app:1")

		// The runtime itself reports the mirror's names.
		direct := h.directStatus(ctr).Status
		if direct.Image.Image != "mirror-a.test/hub/library/app:1" || direct.ImageRef != "mirror-a.test/hub/library/app@"+fakecri.DigestOf("app") {
			t.Fatalf("fake runtime status = %v %v", direct.Image, direct.ImageRef)
		}

		resp := h.containerStatus(ctr)
		st := resp.Status
		if st.Image.Image != "docker.io/library/app:1" {
			t.Errorf("reportIDs=%v: status.image.image = %q, want the original name", reportIDs, st.Image.Image)
		}
		if want := "docker.io/library/app@" + fakecri.DigestOf("app"); st.ImageRef != want {
			t.Errorf("reportIDs=%v: status.image_ref = %q, want %q", reportIDs, st.ImageRef, want)
		}
		if want := map[bool]string{false: "", true: id}[reportIDs]; st.ImageId != want {
			t.Errorf("reportIDs=%v: status.image_id = %q, want %q (an id stays an id)", reportIDs, st.ImageId, want)
		}
		if st.Image.UserSpecifiedImage != "app:1" {
			t.Errorf("user_specified_image = %q, want it kept", st.Image.UserSpecifiedImage)
		}
		// Everything else is the runtime's answer.
		direct.Image, direct.ImageRef = st.Image, st.ImageRef
		if !proto.Equal(direct, st) || resp.Info["pid"] != "42" {
			t.Errorf("status changed beyond its image names:\n got %v\nwant %v (info %v)", st, direct, resp.Info)
		}
	}
}

func TestContainerStatusDigestPull(t *testing.T) {
	h := newHarness(t)
	ref := "docker.io/library/pinned@" + fakecri.DigestOf("pinned")
	h.rt.Publish("mirror-b.test/library/pinned@"+fakecri.DigestOf("pinned"), "pinned")
	id := h.mustPull(ref)
	st := h.containerStatus(h.rt.Create(id, ref)).Status
	// No tag: the image stays what the container was created with (the id),
	// as when the runtime pulls the original by digest.
	if st.Image.Image != id {
		t.Errorf("status.image.image = %q, want the image id %q", st.Image.Image, id)
	}
	if st.ImageRef != ref {
		t.Errorf("status.image_ref = %q, want %q", st.ImageRef, ref)
	}
}

func TestContainerStatusWithoutMirrorPassesUntouched(t *testing.T) {
	h := newHarness(t)
	h.rt.Publish("registry.example.com/plain:1", "plain")
	id := h.mustPull("registry.example.com/plain:1")
	// A mirrored image beside it: its aliases must not leak into the other.
	h.rt.Publish("mirror-a.test/hub/library/app:1", "app")
	h.mustPull("app:1")
	ctr := h.rt.Create(id, "registry.example.com/plain:1")
	if got, want := h.containerStatus(ctr), h.directStatus(ctr); !proto.Equal(got, want) {
		t.Errorf("status of an image pulled without a mirror changed:\n got %v\nwant %v", got, want)
	}
}

func TestContainerStatusAfterImageRemoved(t *testing.T) {
	h := newHarness(t)
	h.rt.Publish("mirror-a.test/hub/library/app:1", "app")
	id := h.mustPull("app:1")
	ctr := h.rt.Create(id, "app:1")
	if _, err := h.images.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: "docker.io/library/app:1"}}); err != nil {
		t.Fatal(err)
	}
	// The runtime reports the id the container was created with; nothing to
	// translate, nothing invented.
	st := h.containerStatus(ctr).Status
	if st.Image.Image != id || st.ImageRef != id {
		t.Errorf("status after the image is gone = %q %q, want the id", st.Image.Image, st.ImageRef)
	}
}
