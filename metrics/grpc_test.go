package metrics

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeStream is a server stream that receives n messages, then EOF.
type fakeStream struct {
	grpc.ServerStream
	n int
}

func (s *fakeStream) Context() context.Context { return context.Background() }
func (s *fakeStream) SendMsg(any) error        { return nil }
func (s *fakeStream) RecvMsg(any) error {
	if s.n == 0 {
		return io.EOF
	}
	s.n--
	return nil
}

// TestGRPCServerCounts: the interceptors count what the provider they
// replace counted, under the same labels: calls started and handled by
// code, messages received and sent, and the handling time.
func TestGRPCServerCounts(t *testing.T) {
	g := newGRPCServer(grpcBuckets)
	reg := prometheus.NewRegistry()
	reg.MustRegister(g)
	unary := g.UnaryServerInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: "/runtime.v1.ImageService/ImageStatus"}
	answers := []error{nil, nil, status.Error(codes.NotFound, "no"), context.Canceled, errors.New("plain"), status.Error(codes.Code(42), "odd")}
	for _, want := range answers {
		if _, err := unary(context.Background(), "req", info, func(context.Context, any) (any, error) { return "resp", want }); err != want {
			t.Fatalf("interceptor returned %v, want the handler's %v", err, want)
		}
	}
	stream := g.StreamServerInterceptor()
	sinfo := &grpc.StreamServerInfo{FullMethod: "/runtime.v1.RuntimeService/Exec", IsClientStream: true, IsServerStream: true}
	err := stream(nil, &fakeStream{n: 3}, sinfo, func(_ any, ss grpc.ServerStream) error {
		for ss.RecvMsg(nil) == nil {
			if err := ss.SendMsg(nil); err != nil {
				return err
			}
		}
		return status.Error(codes.Unavailable, "gone")
	})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("stream interceptor returned %v", err)
	}

	want := `
# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.
# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code="Canceled",grpc_method="ImageStatus",grpc_service="runtime.v1.ImageService",grpc_type="unary"} 1
grpc_server_handled_total{grpc_code="Code(42)",grpc_method="ImageStatus",grpc_service="runtime.v1.ImageService",grpc_type="unary"} 1
grpc_server_handled_total{grpc_code="NotFound",grpc_method="ImageStatus",grpc_service="runtime.v1.ImageService",grpc_type="unary"} 1
grpc_server_handled_total{grpc_code="OK",grpc_method="ImageStatus",grpc_service="runtime.v1.ImageService",grpc_type="unary"} 2
grpc_server_handled_total{grpc_code="Unavailable",grpc_method="Exec",grpc_service="runtime.v1.RuntimeService",grpc_type="bidi_stream"} 1
grpc_server_handled_total{grpc_code="Unknown",grpc_method="ImageStatus",grpc_service="runtime.v1.ImageService",grpc_type="unary"} 1
# HELP grpc_server_msg_received_total Total number of RPC stream messages received on the server.
# TYPE grpc_server_msg_received_total counter
grpc_server_msg_received_total{grpc_method="Exec",grpc_service="runtime.v1.RuntimeService",grpc_type="bidi_stream"} 3
grpc_server_msg_received_total{grpc_method="ImageStatus",grpc_service="runtime.v1.ImageService",grpc_type="unary"} 6
# HELP grpc_server_msg_sent_total Total number of gRPC stream messages sent by the server.
# TYPE grpc_server_msg_sent_total counter
grpc_server_msg_sent_total{grpc_method="Exec",grpc_service="runtime.v1.RuntimeService",grpc_type="bidi_stream"} 3
grpc_server_msg_sent_total{grpc_method="ImageStatus",grpc_service="runtime.v1.ImageService",grpc_type="unary"} 2
# HELP grpc_server_started_total Total number of RPCs started on the server.
# TYPE grpc_server_started_total counter
grpc_server_started_total{grpc_method="Exec",grpc_service="runtime.v1.RuntimeService",grpc_type="bidi_stream"} 1
grpc_server_started_total{grpc_method="ImageStatus",grpc_service="runtime.v1.ImageService",grpc_type="unary"} 6
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"grpc_server_handled_total", "grpc_server_msg_received_total", "grpc_server_msg_sent_total", "grpc_server_started_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(g.seconds); n != 2 {
		t.Errorf("grpc_server_handling_seconds has %d series, want 2", n)
	}
	for method, calls := range map[string]uint64{"ImageStatus": 6, "Exec": 1} {
		if got := histogramCount(t, reg, method); got != calls {
			t.Errorf("grpc_server_handling_seconds{grpc_method=%q} counted %d calls, want %d", method, got, calls)
		}
	}
}

func histogramCount(t *testing.T, reg prometheus.Gatherer, method string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "grpc_server_handling_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "grpc_method" && l.GetValue() == method {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}

// TestGRPCServerInitialize: every registered method reports zeros, for
// every status code, before its first call, with its type.
func TestGRPCServerInitialize(t *testing.T) {
	g := newGRPCServer(grpcBuckets)
	g.InitializeMetrics(fakeServices{
		"runtime.v1.ImageService": {Methods: []grpc.MethodInfo{{Name: "PullImage"}, {Name: "Watch", IsServerStream: true}}},
	})
	if n := testutil.CollectAndCount(g.handled); n != 2*int(codes.Unauthenticated+1) {
		t.Errorf("grpc_server_handled_total has %d series, want one per method and code (%d)", n, 2*int(codes.Unauthenticated+1))
	}
	want := `
# HELP grpc_server_started_total Total number of RPCs started on the server.
# TYPE grpc_server_started_total counter
grpc_server_started_total{grpc_method="PullImage",grpc_service="runtime.v1.ImageService",grpc_type="unary"} 0
grpc_server_started_total{grpc_method="Watch",grpc_service="runtime.v1.ImageService",grpc_type="server_stream"} 0
`
	if err := testutil.CollectAndCompare(g.started, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

// BenchmarkUnaryInterceptor is the cost of counting one unary call.
func BenchmarkUnaryInterceptor(b *testing.B) {
	g := newGRPCServer(grpcBuckets)
	g.InitializeMetrics(fakeServices{"runtime.v1.ImageService": {Methods: []grpc.MethodInfo{{Name: "ImageStatus"}}}})
	unary := g.UnaryServerInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: "/runtime.v1.ImageService/ImageStatus"}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	b.ReportAllocs()
	for b.Loop() {
		_, _ = unary(context.Background(), nil, info, handler)
	}
}
