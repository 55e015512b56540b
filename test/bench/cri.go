package main

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// maxMsgSize matches kubelet's CRI limit: a ListImages answer for 5,000
// images is a few megabytes, over gRPC's 4 MB default.
const maxMsgSize = 16 << 20

// target is one way of reaching containerd's image service.
type target struct {
	name   string
	conn   *grpc.ClientConn
	images runtimeapi.ImageServiceClient
}

// dial opens a client the way kubelet does: one connection per socket,
// no TLS, the CRI message size limits.
func dial(name, sock string) (*target, error) {
	conn, err := grpc.NewClient("unix://"+sock,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)),
	)
	if err != nil {
		return nil, fmt.Errorf("dial %s (%s): %w", name, sock, err)
	}
	return &target{name: name, conn: conn, images: runtimeapi.NewImageServiceClient(conn)}, nil
}

func (t *target) close() { _ = t.conn.Close() }

func (t *target) pull(ctx context.Context, ref string) (string, error) {
	resp, err := t.images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		return "", fmt.Errorf("pull %s via %s: %w", ref, t.name, err)
	}
	return resp.GetImageRef(), nil
}

func (t *target) remove(ctx context.Context, ref string) error {
	_, err := t.images.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		return fmt.Errorf("remove %s via %s: %w", ref, t.name, err)
	}
	return nil
}

// present reports whether the runtime (as seen through t) has ref.
func (t *target) present(ctx context.Context, ref string) (bool, error) {
	resp, err := t.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		return false, fmt.Errorf("image status %s via %s: %w", ref, t.name, err)
	}
	return resp.GetImage() != nil, nil
}

func (t *target) count(ctx context.Context) (int, error) {
	resp, err := t.images.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		return 0, fmt.Errorf("list images via %s: %w", t.name, err)
	}
	return len(resp.GetImages()), nil
}

// imageIDs maps every repo tag t lists to its image id.
func (t *target) imageIDs(ctx context.Context) (map[string]string, error) {
	resp, err := t.images.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		return nil, fmt.Errorf("list images via %s: %w", t.name, err)
	}
	ids := map[string]string{}
	for _, img := range resp.GetImages() {
		for _, tag := range img.GetRepoTags() {
			ids[tag] = img.GetId()
		}
	}
	return ids, nil
}

// runtimeVersion names the runtime behind t, for the report.
func runtimeVersion(ctx context.Context, t *target) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := runtimeapi.NewRuntimeServiceClient(t.conn).Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		return "unknown"
	}
	return v.GetRuntimeName() + " " + v.GetRuntimeVersion()
}
