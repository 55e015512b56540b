package proxy

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The RuntimeService is relayed undecoded (Relay), except the calls that
// name a container's image: ContainerStatus (kubelet's pod status),
// ListContainers (crictl ps, kubelet's relist) and GetContainerEvents
// (kubelet's evented PLEG) report it, and a container created from an image
// the proxy pulled from a mirror would otherwise show the mirror's name
// there; CreateContainer is asked for it, by a name the runtime may know
// only as the mirror's (container_create.go). These four are served from a
// partial RuntimeService descriptor; gRPC sends every method missing from it
// to the unknown-service handler, so the rest of the RuntimeService keeps
// the raw relay.
//
// Like ImageStatus (image_status_raw.go), the calls go through undecoded:
// the image fields are read from the message's bytes, and the message is
// decoded and rewritten only when one of them needs it.

// containerImagesServer is what the partial descriptor needs of its server.
type containerImagesServer interface {
	createContainerFrame(ctx context.Context, in *frame) (any, error)
	containerStatusFrame(ctx context.Context, in *frame) (any, error)
	listContainersFrame(ctx context.Context, in *frame) (any, error)
	containerEvents(in *frame, ss grpc.ServerStream) error
}

// runtimeServiceDesc is the partial RuntimeService descriptor. It needs the
// server codec (Codec) that passes frames through.
func runtimeServiceDesc() *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: runtimeapi.RuntimeService_ServiceDesc.ServiceName,
		HandlerType: (*containerImagesServer)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "CreateContainer", Handler: frameHandler(runtimeapi.RuntimeService_CreateContainer_FullMethodName, containerImagesServer.createContainerFrame)},
			{MethodName: "ContainerStatus", Handler: frameHandler(runtimeapi.RuntimeService_ContainerStatus_FullMethodName, containerImagesServer.containerStatusFrame)},
			{MethodName: "ListContainers", Handler: frameHandler(runtimeapi.RuntimeService_ListContainers_FullMethodName, containerImagesServer.listContainersFrame)},
		},
		Streams: []grpc.StreamDesc{
			{StreamName: "GetContainerEvents", Handler: containerEventsHandler, ServerStreams: true},
		},
		Metadata: runtimeapi.RuntimeService_ServiceDesc.Metadata,
	}
}

// frameHandler is a unary gRPC handler that hands fn the request undecoded.
func frameHandler(fullMethod string, fn func(containerImagesServer, context.Context, *frame) (any, error)) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		in := new(frame)
		if err := dec(in); err != nil {
			return nil, err
		}
		s := srv.(containerImagesServer)
		if interceptor == nil {
			return fn(s, ctx, in)
		}
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: fullMethod}
		return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
			return fn(s, ctx, req.(*frame))
		})
	}
}

func containerEventsHandler(srv any, ss grpc.ServerStream) error {
	in := new(frame)
	if err := ss.RecvMsg(in); err != nil {
		return err
	}
	return srv.(containerImagesServer).containerEvents(in, ss)
}

// invokeFrame forwards an undecoded unary call to the runtime with the
// caller's metadata, as the relay would, and returns the undecoded answer.
func (s *Server) invokeFrame(ctx context.Context, method string, in *frame) (*frame, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		ctx = metadata.NewOutgoingContext(ctx, forwardable(md))
	}
	out := new(frame)
	if err := s.conn.Invoke(ctx, method, in, out, rawCall); err != nil {
		return nil, err
	}
	return out, nil
}
