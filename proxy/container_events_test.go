package proxy

import (
	"errors"
	"io"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/fakecri"
)

func TestContainerEventsShowOriginalNames(t *testing.T) {
	h := newHarness(t)
	h.rt.Publish("mirror-a.test/hub/library/app:1", "app")
	h.rt.Publish("registry.example.com/plain:1", "plain")
	h.rt.Create(h.mustPull("app:1"), "app:1")
	h.rt.Create(h.mustPull("registry.example.com/plain:1"), "registry.example.com/plain:1")

	stream, err := h.runtime.GetContainerEvents(ctx(t), &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var events []*runtimeapi.ContainerEventResponse
	for range 10 {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		events = append(events, ev)
	}
	if len(events) != 5 {
		t.Fatalf("got %d events, want 5: %v", len(events), events)
	}
	if events[0].ContainerId != "c0" || len(events[0].ContainersStatuses) != 0 {
		t.Errorf("event without statuses changed: %v", events[0])
	}
	ev := events[3]
	if ev.ContainerId != "ctr0" || ev.ContainerEventType != runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT || ev.PodSandboxStatus.GetId() != "pod-ctr0" {
		t.Errorf("event changed beyond image names: %v", ev)
	}
	st := ev.ContainersStatuses[0]
	if st.Image.Image != "docker.io/library/app:1" || st.ImageRef != "docker.io/library/app@"+fakecri.DigestOf("app") {
		t.Errorf("event status image = %q %q, want the original names", st.Image.Image, st.ImageRef)
	}
	if st := events[4].ContainersStatuses[0]; st.Image.Image != "registry.example.com/plain:1" || st.ImageRef != "registry.example.com/plain@"+fakecri.DigestOf("plain") {
		t.Errorf("event status of an image without a mirror = %q %q", st.Image.Image, st.ImageRef)
	}
}
