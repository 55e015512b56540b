package fakecri

import (
	"context"
	"fmt"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// container is a container of the Runtime: created from an image, as kubelet creates one, by
// image id.
type container struct {
	id      string
	imageID string // the image it runs
	config  string // ContainerConfig.image.image: what kubelet passed (the image id)
	user    string // ContainerConfig.image.user_specified_image: the pod's image
}

// Create adds a container running image (any name the runtime resolves) and returns its id.
// It panics when the runtime has no such image: a test set-up error.
func (f *Runtime) Create(image, user string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	img := f.find(image)
	if img == nil {
		panic("fake runtime: no image " + image)
	}
	id := fmt.Sprintf("ctr%d", len(f.containers))
	f.containers = append(f.containers, container{id: id, imageID: img.Id, config: img.Id, user: user})
	return id
}

// CreateContainer creates a container as containerd does: its image is resolved by id, tag
// or digest reference, and a name the runtime does not have is NotFound. The request is
// recorded (CreateRequests).
func (f *Runtime) CreateContainer(_ context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates = append(f.creates, proto.Clone(req).(*runtimeapi.CreateContainerRequest))
	spec := req.GetConfig().GetImage()
	img := f.find(spec.GetImage())
	if img == nil {
		return nil, status.Errorf(codes.NotFound, "failed to resolve image %q: not found", spec.GetImage())
	}
	id := fmt.Sprintf("ctr%d", len(f.containers))
	f.containers = append(f.containers, container{id: id, imageID: img.Id, config: spec.GetImage(), user: spec.GetUserSpecifiedImage()})
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

// CreateRequests returns every CreateContainer request as the runtime received it, in order.
func (f *Runtime) CreateRequests() []*runtimeapi.CreateContainerRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.creates)
}

// statusOf builds a container's status the way containerd does: the image's first tag as
// image (else what the container was created with), its first repo digest as image_ref (else
// the image id). Called with f.mu held.
func (f *Runtime) statusOf(c container) *runtimeapi.ContainerStatus {
	st := &runtimeapi.ContainerStatus{
		Id:       c.id,
		Metadata: &runtimeapi.ContainerMetadata{Name: c.id},
		State:    runtimeapi.ContainerState_CONTAINER_RUNNING,
		Image:    &runtimeapi.ImageSpec{Image: c.config, UserSpecifiedImage: c.user},
		ImageRef: c.imageID,
		LogPath:  "/var/log/pods/" + c.id + ".log",
	}
	if img := f.images[c.imageID]; img != nil {
		if len(img.RepoTags) > 0 {
			st.Image = &runtimeapi.ImageSpec{Image: img.RepoTags[0], UserSpecifiedImage: c.user}
		}
		if len(img.RepoDigests) > 0 {
			st.ImageRef = img.RepoDigests[0]
		}
	}
	if f.ReportIDs {
		st.ImageId = c.imageID
	}
	return st
}

// ContainerStatus answers for a container Create made; any other is NotFound.
func (f *Runtime) ContainerStatus(_ context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.containers {
		if c.id == req.GetContainerId() {
			return &runtimeapi.ContainerStatusResponse{Status: f.statusOf(c), Info: map[string]string{"pid": "42"}}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "container %q not found", req.GetContainerId())
}

// ListContainers lists containers as containerd does (image and image_ref are the image id
// kubelet created them with), or with ListsByNames set, under the names ContainerStatus
// reports.
func (f *Runtime) ListContainers(context.Context, *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &runtimeapi.ListContainersResponse{}
	for _, c := range f.containers {
		entry := &runtimeapi.Container{
			Id:       c.id,
			Metadata: &runtimeapi.ContainerMetadata{Name: c.id},
			State:    runtimeapi.ContainerState_CONTAINER_RUNNING,
			Image:    &runtimeapi.ImageSpec{Image: c.config, UserSpecifiedImage: c.user},
			ImageRef: c.imageID,
			Labels:   map[string]string{"io.kubernetes.pod.name": "p-" + c.id},
		}
		if f.ListsByNames {
			st := f.statusOf(c)
			entry.Image, entry.ImageRef = st.Image, st.ImageRef
		}
		if f.ReportIDs {
			entry.ImageId = c.imageID
		}
		resp.Containers = append(resp.Containers, entry)
	}
	return resp, nil
}

// GetContainerEvents sends three events without statuses (c0 to c2), then one event per
// container carrying its status.
func (f *Runtime) GetContainerEvents(_ *runtimeapi.GetEventsRequest, stream runtimeapi.RuntimeService_GetContainerEventsServer) error {
	for i := range 3 {
		if err := stream.Send(&runtimeapi.ContainerEventResponse{ContainerId: fmt.Sprintf("c%d", i)}); err != nil {
			return err
		}
	}
	f.mu.Lock()
	var events []*runtimeapi.ContainerEventResponse
	for _, c := range f.containers {
		events = append(events, &runtimeapi.ContainerEventResponse{
			ContainerId:        c.id,
			ContainerEventType: runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT,
			PodSandboxStatus:   &runtimeapi.PodSandboxStatus{Id: "pod-" + c.id},
			ContainersStatuses: []*runtimeapi.ContainerStatus{f.statusOf(c)},
		})
	}
	f.mu.Unlock()
	for _, ev := range events {
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	return nil
}
