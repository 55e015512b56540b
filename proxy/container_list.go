package proxy

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// listContainersFrame forwards an undecoded ListContainersRequest and shows
// each container's image under its original name. kubelet lists containers
// every second (its relist); the answer is decoded only when an entry names
// a mirror.
func (s *Server) listContainersFrame(ctx context.Context, in *frame) (any, error) {
	out, err := s.invokeFrame(ctx, runtimeapi.RuntimeService_ListContainers_FullMethodName, in)
	if err != nil {
		return nil, err
	}
	if !s.anyRawNamesChange(out.data, 1, containerFields) { // ListContainersResponse.containers
		return out, nil
	}
	var resp runtimeapi.ListContainersResponse
	if err := proto.Unmarshal(out.data, &resp); err != nil {
		return nil, status.Errorf(codes.Internal, "ListContainers: cannot decode the runtime's answer: %v", err)
	}
	for _, c := range resp.Containers {
		s.translateContainer(c)
	}
	return &resp, nil
}
