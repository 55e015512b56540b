package proxy

import (
	"io"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestRuntimeServiceIsRelayed(t *testing.T) {
	h := newHarness(t)

	v, err := h.runtime.Version(ctx(t), &runtimeapi.VersionRequest{Version: "v1-test"})
	if err != nil {
		t.Fatal(err)
	}
	if v.RuntimeName != "fake" || v.Version != "v1-test" {
		t.Errorf("Version = %v", v)
	}

	_, err = h.runtime.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: "nope"})
	if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != `container "nope" not found` {
		t.Errorf("error status not relayed as is: %v", err)
	}

	stream, err := h.runtime.GetContainerEvents(ctx(t), &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		ids = append(ids, ev.ContainerId)
	}
	if len(ids) != 3 || ids[0] != "c0" || ids[2] != "c2" {
		t.Errorf("streamed events = %v", ids)
	}

	_, err = h.runtime.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("a method the runtime lacks must say Unimplemented, got %v", err)
	}
}

func TestImageFsInfoForwarded(t *testing.T) {
	h := newHarness(t)
	resp, err := h.images.ImageFsInfo(ctx(t), &runtimeapi.ImageFsInfoRequest{})
	if err != nil || len(resp.ImageFilesystems) != 1 {
		t.Fatalf("ImageFsInfo = %v, %v", resp, err)
	}
}
