package metrics

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The grpc_type label values.
const (
	grpcUnary        = "unary"
	grpcClientStream = "client_stream"
	grpcServerStream = "server_stream"
	grpcBidiStream   = "bidi_stream"
)

// GRPCServer holds the grpc_server_* families, with the names, labels and
// help texts of the go-grpc-middleware Prometheus provider, so dashboards
// and alerts written for it keep working.
//
// Its interceptors run around every CRI call, ImageStatus before every
// container start. So they do not look series up by label values on each
// call (hashing five label sets and taking the vectors' locks): each method
// gets its series once, and a call finds them with one lookup in a map that
// is never written to, only replaced when a method is first seen. The
// method names a server can see must be bounded by its caller (the proxy
// counts every method CRI does not define under one name).
type GRPCServer struct {
	started  *prometheus.CounterVec
	handled  *prometheus.CounterVec
	received *prometheus.CounterVec
	sent     *prometheus.CounterVec
	seconds  *prometheus.HistogramVec

	mu      sync.Mutex // serialises replacing methods
	methods atomic.Pointer[map[methodKey]*methodSeries]
}

type methodKey struct{ fullMethod, typ string }

// methodSeries are the series of one method.
type methodSeries struct {
	labels                  [3]string // type, service, method
	started, received, sent prometheus.Counter
	seconds                 prometheus.Observer
	// handled by status code; created on first use unless the method was
	// initialised, as a lookup by label values would.
	handled [codes.Unauthenticated + 1]atomic.Pointer[counter]
}

type counter struct{ prometheus.Counter }

func newGRPCServer(buckets []float64) *GRPCServer {
	labels := []string{"grpc_type", "grpc_service", "grpc_method"}
	g := &GRPCServer{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_started_total",
			Help: "Total number of RPCs started on the server.",
		}, labels),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total",
			Help: "Total number of RPCs completed on the server, regardless of success or failure.",
		}, append(labels[:3:3], "grpc_code")),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_received_total",
			Help: "Total number of RPC stream messages received on the server.",
		}, labels),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_sent_total",
			Help: "Total number of gRPC stream messages sent by the server.",
		}, labels),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "grpc_server_handling_seconds",
			Help:    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
			Buckets: buckets,
		}, labels),
	}
	g.methods.Store(&map[methodKey]*methodSeries{})
	return g
}

// Describe implements prometheus.Collector.
func (g *GRPCServer) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range g.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (g *GRPCServer) Collect(ch chan<- prometheus.Metric) {
	for _, c := range g.collectors() {
		c.Collect(ch)
	}
}

func (g *GRPCServer) collectors() []prometheus.Collector {
	return []prometheus.Collector{g.started, g.handled, g.received, g.sent, g.seconds}
}

// ServiceInfoProvider is what InitializeMetrics reads the services from; a
// *grpc.Server is one.
type ServiceInfoProvider interface {
	GetServiceInfo() map[string]grpc.ServiceInfo
}

// InitializeMetrics creates the series of every method registered on srv,
// every status code included, so each reports zeros before its first call.
func (g *GRPCServer) InitializeMetrics(srv ServiceInfoProvider) {
	for service, info := range srv.GetServiceInfo() {
		for _, m := range info.Methods {
			ms := g.series("/"+service+"/"+m.Name, grpcType(m.IsClientStream, m.IsServerStream))
			for c := range ms.handled {
				ms.handledFor(g.handled, codes.Code(c))
			}
		}
	}
}

// series returns the series of a method, creating them on its first call.
func (g *GRPCServer) series(fullMethod, typ string) *methodSeries {
	k := methodKey{fullMethod, typ}
	if ms, ok := (*g.methods.Load())[k]; ok {
		return ms
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	old := *g.methods.Load()
	if ms, ok := old[k]; ok {
		return ms
	}
	service, method := splitMethod(fullMethod)
	ms := &methodSeries{labels: [3]string{typ, service, method}}
	ms.started = g.started.WithLabelValues(ms.labels[:]...)
	ms.received = g.received.WithLabelValues(ms.labels[:]...)
	ms.sent = g.sent.WithLabelValues(ms.labels[:]...)
	ms.seconds = g.seconds.WithLabelValues(ms.labels[:]...)
	next := make(map[methodKey]*methodSeries, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[k] = ms
	g.methods.Store(&next)
	return ms
}

// handledFor returns the grpc_server_handled_total series of code.
func (ms *methodSeries) handledFor(vec *prometheus.CounterVec, code codes.Code) prometheus.Counter {
	if int(code) >= len(ms.handled) { // not a code gRPC defines: no slot, look it up
		return vec.WithLabelValues(ms.labels[0], ms.labels[1], ms.labels[2], code.String())
	}
	if c := ms.handled[code].Load(); c != nil {
		return c.Counter
	}
	c := &counter{vec.WithLabelValues(ms.labels[0], ms.labels[1], ms.labels[2], code.String())}
	ms.handled[code].CompareAndSwap(nil, c) // a racing call stored the same series
	return c.Counter
}

// done records the end of a call.
func (g *GRPCServer) done(ms *methodSeries, err error, start time.Time) {
	ms.handledFor(g.handled, code(err)).Inc()
	ms.seconds.Observe(time.Since(start).Seconds())
}

// code is the status code gRPC answers a handler's error with.
func code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return status.FromContextError(err).Code()
}

// UnaryServerInterceptor counts unary calls.
func (g *GRPCServer) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		ms := g.series(info.FullMethod, grpcUnary)
		ms.started.Inc()
		ms.received.Inc()
		resp, err := handler(ctx, req)
		if err == nil {
			ms.sent.Inc()
		}
		g.done(ms, err, start)
		return resp, err
	}
}

// StreamServerInterceptor counts streaming calls and their messages.
func (g *GRPCServer) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		ms := g.series(info.FullMethod, grpcType(info.IsClientStream, info.IsServerStream))
		ms.started.Inc()
		err := handler(srv, &countedStream{ServerStream: ss, ms: ms})
		g.done(ms, err, start)
		return err
	}
}

// countedStream counts the messages a stream sends and receives.
type countedStream struct {
	grpc.ServerStream
	ms *methodSeries
}

func (s *countedStream) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	if err == nil {
		s.ms.sent.Inc()
	}
	return err
}

func (s *countedStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.ms.received.Inc()
	}
	return err
}

func grpcType(clientStream, serverStream bool) string {
	switch {
	case !clientStream && !serverStream:
		return grpcUnary
	case clientStream && !serverStream:
		return grpcClientStream
	case !clientStream && serverStream:
		return grpcServerStream
	}
	return grpcBidiStream
}

// splitMethod splits "/service/method"; anything else is "unknown", "unknown".
func splitMethod(fullMethod string) (service, method string) {
	service, method, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return "unknown", "unknown"
	}
	return service, method
}
