package proxy

import (
	"context"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// UnknownMethod is the full method name under which calls to methods CRI v1
// does not define are counted (grpc_service and grpc_method "unknown"). The
// relay forwards any method name a local client makes up, and the per-method
// metrics would otherwise mint a series for each one.
const UnknownMethod = "/unknown/unknown"

// criMethods is the set of full method names of CRI v1, from the generated
// service descriptors, so a method added to cri-api is known on rebuild.
var criMethods = func() map[string]bool {
	m := map[string]bool{}
	for _, d := range []grpc.ServiceDesc{runtimeapi.RuntimeService_ServiceDesc, runtimeapi.ImageService_ServiceDesc} {
		for _, md := range d.Methods {
			m["/"+d.ServiceName+"/"+md.MethodName] = true
		}
		for _, sd := range d.Streams {
			m["/"+d.ServiceName+"/"+sd.StreamName] = true
		}
	}
	return m
}()

// metricMethod returns the method name to label a call with: its own for a
// CRI method, UnknownMethod for anything else.
func metricMethod(fullMethod string) string {
	if criMethods[fullMethod] {
		return fullMethod
	}
	return UnknownMethod
}

// boundedUnary hands next a call info whose method is a CRI method or
// UnknownMethod. Only what next sees changes; the call itself is served (or
// relayed) under its own name.
func boundedUnary(next grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if name := metricMethod(info.FullMethod); name != info.FullMethod {
			info = &grpc.UnaryServerInfo{Server: info.Server, FullMethod: name}
		}
		return next(ctx, req, info, handler)
	}
}

// boundedStream is boundedUnary for streams, the relay's included.
func boundedStream(next grpc.StreamServerInterceptor) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if name := metricMethod(info.FullMethod); name != info.FullMethod {
			info = &grpc.StreamServerInfo{FullMethod: name, IsClientStream: info.IsClientStream, IsServerStream: info.IsServerStream}
		}
		return next(srv, ss, info, handler)
	}
}
