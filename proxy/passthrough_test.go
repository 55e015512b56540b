package proxy

import (
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
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

	_, err = h.runtime.ListPodSandbox(ctx(t), &runtimeapi.ListPodSandboxRequest{})
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

func TestGRPCMetricsPerMethod(t *testing.T) {
	h := newHarness(t)
	h.rt.Publish("mirror-a.test/hub/library/one:1", "one")
	h.mustPull("one:1")
	for range 3 {
		h.status("docker.io/library/one:1")
		h.status("docker.io/library/absent:1")
	}
	h.list("")
	if _, err := h.runtime.Version(ctx(t), &runtimeapi.VersionRequest{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		typ, service, method string
		want                 float64
	}{
		// ImageStatus has its own handler (undecoded); it still reports.
		{"unary", "runtime.v1.ImageService", "ImageStatus", 6},
		{"unary", "runtime.v1.ImageService", "PullImage", 1},
		{"unary", "runtime.v1.ImageService", "ListImages", 1},
		// The relayed RuntimeService, a stream to the relay.
		{"bidi_stream", "runtime.v1.RuntimeService", "Version", 1},
	} {
		got := counterValue(t, h.registry, "grpc_server_handled_total", map[string]string{
			"grpc_type": c.typ, "grpc_service": c.service, "grpc_method": c.method, "grpc_code": "OK"})
		if got != c.want {
			t.Errorf("grpc_server_handled_total{%s %s %s OK} = %v, want %v", c.typ, c.service, c.method, got, c.want)
		}
	}
}

// counterValue sums the samples of family name in reg whose labels include want.
func counterValue(t *testing.T, reg prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue metrics
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// TestUnknownMethodsShareOneLabel: a local client calling thousands of made-up
// method names through the relay must not grow the per-method metrics; the
// calls are still relayed (the runtime answers Unimplemented) and counted
// under grpc_method "unknown", while CRI methods keep their own names.
func TestUnknownMethodsShareOneLabel(t *testing.T) {
	h := newHarness(t)
	if _, err := h.runtime.Version(ctx(t), &runtimeapi.VersionRequest{}); err != nil {
		t.Fatal(err)
	}
	seriesBefore := grpcSeries(t, h.registry)

	const junk = 2000
	for i := range junk {
		method := fmt.Sprintf("/junk.Service%d/Method%d", i, i)
		if i%2 == 1 {
			method = fmt.Sprintf("/runtime.v1.RuntimeService/NoSuchMethod%d", i) // a CRI service, a made-up method
		}
		err := h.conn.Invoke(ctx(t), method, &runtimeapi.VersionRequest{}, &runtimeapi.VersionResponse{})
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("%s: %v, want the runtime's Unimplemented relayed", method, err)
		}
	}
	if _, err := h.runtime.Version(ctx(t), &runtimeapi.VersionRequest{}); err != nil {
		t.Fatal(err)
	}

	seriesAfter := grpcSeries(t, h.registry)
	// One new series per grpc_server_* family for "unknown" (handled_total also per code),
	// a handful in all, not one per name.
	if grown := seriesAfter - seriesBefore; grown > 10 {
		t.Errorf("grpc_server_* grew by %d series after %d made-up method names, want at most 10", grown, junk)
	}
	if got := counterValue(t, h.registry, "grpc_server_handled_total", map[string]string{
		"grpc_service": "unknown", "grpc_method": "unknown", "grpc_code": "Unimplemented"}); got != junk {
		t.Errorf("calls counted under grpc_method unknown = %v, want %d", got, junk)
	}
	if got := counterValue(t, h.registry, "grpc_server_handled_total", map[string]string{
		"grpc_service": "runtime.v1.RuntimeService", "grpc_method": "Version", "grpc_code": "OK"}); got != 2 {
		t.Errorf("RuntimeService/Version counted %v times under its own name, want 2", got)
	}
}

// grpcSeries counts the series of the grpc_server_* families in reg.
func grpcSeries(t *testing.T, reg prometheus.Gatherer) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "grpc_server_") {
			n += len(mf.GetMetric())
		}
	}
	return n
}

// TestPooledFrameKeepsBuffers: an undecoded answer is kept in the buffers
// gRPC received it in, not copied to a buffer of its own, and outlives
// gRPC's free of them until it is freed or sent.
func TestPooledFrameKeepsBuffers(t *testing.T) {
	pool := mem.DefaultBufferPool()
	var data mem.BufferSlice
	for i := range 3 {
		b := pool.Get(16 << 10)
		for j := range *b {
			(*b)[j] = byte(i)
		}
		data = append(data, mem.NewBuffer(b, pool))
	}
	c := rawCodec()
	f := new(pooledFrame)
	if err := c.Unmarshal(data, f); err != nil {
		t.Fatal(err)
	}
	data.Free() // as gRPC does after Unmarshal
	if len(f.data) != len(data) {
		t.Fatalf("the answer is in %d buffers, it came in %d", len(f.data), len(data))
	}
	for i := range data {
		got := f.data[i].ReadOnlyData()
		if &got[0] != &data[i].ReadOnlyData()[0] || got[len(got)-1] != byte(i) {
			t.Fatalf("buffer %d was copied or changed", i)
		}
	}
	sent, err := c.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(sent) != len(data) || f.data != nil {
		t.Fatalf("Marshal sent %d buffers and left %d to the frame", len(sent), len(f.data))
	}
	sent.Free() // as gRPC does once written
}
