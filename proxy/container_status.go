package proxy

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// containerStatusFrame forwards an undecoded ContainerStatusRequest and
// shows the container's image under its original name. kubelet builds a
// pod's containerStatuses[].image and imageID from this answer.
func (s *Server) containerStatusFrame(ctx context.Context, in *frame) (any, error) {
	out, err := s.invokeFrame(ctx, runtimeapi.RuntimeService_ContainerStatus_FullMethodName, in)
	if err != nil {
		return nil, err
	}
	if !s.rawNamesChange(bytesField(out.data, 1), containerStatusFields) { // ContainerStatusResponse.status
		return out, nil
	}
	var resp runtimeapi.ContainerStatusResponse
	if err := proto.Unmarshal(out.data, &resp); err != nil {
		return nil, status.Errorf(codes.Internal, "ContainerStatus: cannot decode the runtime's answer: %v", err)
	}
	s.translateContainerStatus(resp.Status)
	return &resp, nil
}
