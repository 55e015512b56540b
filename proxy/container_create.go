package proxy

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Field numbers of the image name in an undecoded CreateContainerRequest.
const (
	createContainerConfig = protowire.Number(2) // runtimeapi.CreateContainerRequest.config
	containerConfigImage  = protowire.Number(2) // runtimeapi.ContainerConfig.image
)

// createContainerFrame forwards an undecoded CreateContainerRequest, with
// the container's image named so that the runtime finds it. kubelet names
// the image by the id PullImage returned, which the runtime knows; crictl
// create, critest and other clients name it as they pulled it, and the
// runtime knows an image the proxy pulled from a mirror only under the
// mirror's name. Such a name is replaced by its alias's image id, the image
// ImageStatus reports for it, and kept in user_specified_image, as kubelet
// does. Every other request goes through as it came.
func (s *Server) createContainerFrame(ctx context.Context, in *frame) (any, error) {
	method := runtimeapi.RuntimeService_CreateContainer_FullMethodName
	image := string(bytesField(bytesField(bytesField(in.data, createContainerConfig), containerConfigImage), imageSpecImage))
	if image == "" || isImageID(image) {
		return s.invokeFrame(ctx, method, in)
	}
	a, ok := s.lookupAlias(ctx, image)
	if !ok {
		return s.invokeFrame(ctx, method, in)
	}
	// The alias must still name an image of the runtime's: one removed
	// behind the proxy's back is dropped, and the name left to the runtime.
	resp, err := s.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: a.ImageID}})
	if err != nil {
		return nil, err
	}
	if resp.GetImage() == nil {
		s.dropStale(a)
		return s.invokeFrame(ctx, method, in)
	}
	var req runtimeapi.CreateContainerRequest
	if err := proto.Unmarshal(in.data, &req); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "CreateContainer: cannot decode the request: %v", err)
	}
	spec := req.GetConfig().GetImage()
	spec.Image = resp.GetImage().GetId()
	if spec.UserSpecifiedImage == "" {
		spec.UserSpecifiedImage = image
	}
	data, err := proto.Marshal(&req)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "CreateContainer: cannot encode the request: %v", err)
	}
	s.log.WithFields(map[string]any{"image": image, "image_id": spec.Image}).Debug("CreateContainer: the image named by its id")
	return s.invokeFrame(ctx, method, &frame{data: data})
}
