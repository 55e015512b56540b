package proxy

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// containerEvents relays the GetContainerEvents stream, kubelet's evented
// PLEG, and shows the image of each container status an event carries under
// its original name. Events naming no mirror pass undecoded.
func (s *Server) containerEvents(in *frame, ss grpc.ServerStream) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		ctx = metadata.NewOutgoingContext(ctx, forwardable(md))
	}
	cs, err := s.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true},
		runtimeapi.RuntimeService_GetContainerEvents_FullMethodName, rawCall)
	if err != nil {
		return err
	}
	if err := cs.SendMsg(in); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if err := cs.CloseSend(); err != nil {
		return err
	}
	if hdr, err := cs.Header(); err == nil && len(hdr) > 0 {
		if err := ss.SendHeader(hdr); err != nil {
			return err
		}
	}
	for {
		f := new(frame)
		if err := cs.RecvMsg(f); err != nil {
			ss.SetTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		msg, err := s.translateEvent(f)
		if err != nil {
			return err
		}
		if err := ss.SendMsg(msg); err != nil {
			return err
		}
	}
}

// translateEvent returns an undecoded ContainerEventResponse as is, or
// decoded and translated when one of its container statuses names a mirror.
func (s *Server) translateEvent(f *frame) (any, error) {
	if !s.anyRawNamesChange(f.data, 5, containerStatusFields) { // ContainerEventResponse.containers_statuses
		return f, nil
	}
	var ev runtimeapi.ContainerEventResponse
	if err := proto.Unmarshal(f.data, &ev); err != nil {
		return nil, status.Errorf(codes.Internal, "GetContainerEvents: cannot decode the runtime's event: %v", err)
	}
	for _, st := range ev.ContainersStatuses {
		s.translateContainerStatus(st)
	}
	return &ev, nil
}
