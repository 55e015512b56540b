// Package fakecri is a CRI runtime double for unit tests and in-process benchmarks. It
// behaves like containerd where the proxy cares: an image has an id, names and repo digests;
// a pull names the image by the reference it was asked for; removing any name removes the
// image. It records every pull with the auth it received, and can fail, stall or hold pulls.
//
//	rt := fakecri.New()
//	rt.Publish("mirror.test/library/app:1", "app")   // pullable, content decides id and digest
//	endpoint := fakecri.Serve(t, rt)                  // "unix:///tmp/cmpXXX/rt.sock"
//
// Integration tests use a real containerd instead (test/testenv).
package fakecri

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/testenv"
)

// Runtime serves the CRI ImageService and enough of the RuntimeService to see a relay
// forward unary calls, error statuses and server streams, and a proxy translate the image
// names in container creation, statuses, lists and events (containers.go).
type Runtime struct {
	runtimeapi.UnimplementedImageServiceServer
	runtimeapi.UnimplementedRuntimeServiceServer

	// Block, when set before the pulls start, holds every pull until it is closed (or the
	// pull's context ends).
	Block chan struct{}
	// Started, when set before the pulls start, receives each pulled reference on arrival.
	Started chan string
	// ReportIDs, when set before the calls, makes container statuses and lists carry
	// image_id, as newer runtimes do.
	ReportIDs bool
	// ListsByNames, when set before the calls, makes ListContainers name images as
	// ContainerStatus does (containerd lists the image id kubelet created them with).
	ListsByNames bool
	// CRIO, when set before the pulls, makes the runtime answer as CRI-O does: image ids
	// are bare hex, and PullImage's image_ref is a digest reference in the repository
	// pulled ("mirror.test/library/app@sha256:…"), not the id.
	CRIO bool

	mu         sync.Mutex
	registry   map[string]string            // pullable reference → content (decides id and digest)
	failures   map[string]error             // reference → error its pull returns
	stalls     map[string]bool              // references whose pulls never answer (a black hole)
	images     map[string]*runtimeapi.Image // id → image
	pulls      []Pull                       // every PullImage, in order
	containers []container                  // in creation order (containers.go)
	server     *grpc.Server                 // set by Serve

	creates []*runtimeapi.CreateContainerRequest // every CreateContainer, in order (containers.go)
}

// Pull is one PullImage call as the runtime received it.
type Pull struct {
	Image string
	Auth  *runtimeapi.AuthConfig
}

// New returns a runtime with no images and nothing pullable.
func New() *Runtime {
	return &Runtime{
		registry: map[string]string{},
		failures: map[string]error{},
		stalls:   map[string]bool{},
		images:   map[string]*runtimeapi.Image{},
	}
}

// Publish makes ref pullable with the given content: the same content is the same image.
func (f *Runtime) Publish(ref, content string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registry[ref] = content
}

// Fail makes pulls of ref return err.
func (f *Runtime) Fail(ref string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures[ref] = err
}

// Stall makes pulls of ref wait until their caller gives up.
func (f *Runtime) Stall(ref string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stalls[ref] = true
}

// Add puts an image into the runtime as it is, as if pulled earlier.
func (f *Runtime) Add(img *runtimeapi.Image) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images[img.GetId()] = proto.Clone(img).(*runtimeapi.Image)
}

// Pulls returns every pull so far, in order.
func (f *Runtime) Pulls() []Pull {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.pulls)
}

// PulledRefs returns the reference of every pull so far, in order.
func (f *Runtime) PulledRefs() []string {
	var refs []string
	for _, p := range f.Pulls() {
		refs = append(refs, p.Image)
	}
	return refs
}

// Forget removes an image behind the proxy's back, as `ctr images rm` would.
func (f *Runtime) Forget(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.images, id)
}

// Stop stops the server Serve started: the runtime goes away under its clients.
func (f *Runtime) Stop() {
	f.mu.Lock()
	gs := f.server
	f.mu.Unlock()
	if gs != nil {
		gs.Stop()
	}
}

// DigestOf is the manifest digest of an image published with content.
func DigestOf(content string) string {
	return fmt.Sprintf("sha256:%x", sha256.Sum256([]byte("manifest "+content)))
}

// IDOf is the image id of an image published with content.
func IDOf(content string) string {
	return fmt.Sprintf("sha256:%x", sha256.Sum256([]byte("config "+content)))
}

// PullImage answers as containerd does (or CRI-O, see CRIO): the image is named by the reference pulled, a name
// moves to the image it now points at, and a repo digest is recorded for the repository.
func (f *Runtime) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	ref := req.GetImage().GetImage()
	f.mu.Lock()
	f.pulls = append(f.pulls, Pull{Image: ref, Auth: proto.Clone(req.GetAuth()).(*runtimeapi.AuthConfig)})
	block, started := f.Block, f.Started
	if f.stalls[ref] {
		block = make(chan struct{})
	}
	f.mu.Unlock()
	if started != nil {
		started <- ref
	}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failures[ref]; err != nil {
		return nil, err
	}
	content, ok := f.registry[ref]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "failed to resolve reference %q: not found", ref)
	}
	repo, err := testenv.Repository(ref)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	id := IDOf(content)
	if f.CRIO {
		id = strings.TrimPrefix(id, "sha256:")
	}
	img := f.images[id]
	if img == nil {
		img = &runtimeapi.Image{Id: id, Size: 1234}
		f.images[id] = img
	}
	for otherID, other := range f.images {
		if otherID != id {
			other.RepoTags = slices.DeleteFunc(other.RepoTags, func(s string) bool { return s == ref })
		}
	}
	if !strings.Contains(ref, "@") {
		img.RepoTags = appendNew(img.RepoTags, ref)
	}
	repoDigest := repo + "@" + DigestOf(content)
	img.RepoDigests = appendNew(img.RepoDigests, repoDigest)
	if f.CRIO {
		return &runtimeapi.PullImageResponse{ImageRef: repoDigest}, nil
	}
	return &runtimeapi.PullImageResponse{ImageRef: id}, nil
}

func appendNew(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// find resolves a name, digest reference or id the way containerd does.
func (f *Runtime) find(name string) *runtimeapi.Image {
	if img, ok := f.images[name]; ok {
		return img
	}
	for _, img := range f.images {
		if slices.Contains(img.RepoTags, name) || slices.Contains(img.RepoDigests, name) {
			return img
		}
	}
	return nil
}

// ImageStatus returns the image by id or any of its names; no image is an empty answer.
func (f *Runtime) ImageStatus(_ context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	img := f.find(req.GetImage().GetImage())
	if img == nil {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	return &runtimeapi.ImageStatusResponse{Image: proto.Clone(img).(*runtimeapi.Image)}, nil
}

// ListImages returns every image (the filter is not applied).
func (f *Runtime) ListImages(_ context.Context, _ *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &runtimeapi.ListImagesResponse{}
	for _, img := range f.images {
		resp.Images = append(resp.Images, proto.Clone(img).(*runtimeapi.Image))
	}
	return resp, nil
}

// StreamImages sends one image per message: a proxy must translate every chunk.
func (f *Runtime) StreamImages(req *runtimeapi.StreamImagesRequest, stream runtimeapi.ImageService_StreamImagesServer) error {
	resp, _ := f.ListImages(stream.Context(), &runtimeapi.ListImagesRequest{Filter: req.GetFilter()})
	for _, img := range resp.Images {
		if err := stream.Send(&runtimeapi.StreamImagesResponse{Images: []*runtimeapi.Image{img}}); err != nil {
			return err
		}
	}
	return nil
}

// RemoveImage removes the image any name or the id refers to; an unknown one is no error.
func (f *Runtime) RemoveImage(_ context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if img := f.find(req.GetImage().GetImage()); img != nil {
		delete(f.images, img.Id)
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}

// ImageFsInfo answers with one file system.
func (f *Runtime) ImageFsInfo(context.Context, *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	return &runtimeapi.ImageFsInfoResponse{ImageFilesystems: []*runtimeapi.FilesystemUsage{{Timestamp: 1}}}, nil
}

// Version echoes the requested version and names the runtime "fake".
func (f *Runtime) Version(_ context.Context, req *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{Version: req.GetVersion(), RuntimeName: "fake", RuntimeVersion: "1.0", RuntimeApiVersion: "v1"}, nil
}

// ShortSocket returns a unix socket path in a fresh directory short enough for the 108-byte
// limit (t.TempDir() is often longer); the test's cleanup removes it.
func ShortSocket(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cmp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, name)
}

// Serve serves f (image and runtime services) on a fresh unix socket until the test ends,
// and returns its endpoint ("unix:///...").
func Serve(t testing.TB, f *Runtime) string {
	t.Helper()
	path := ShortSocket(t, "rt.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	runtimeapi.RegisterImageServiceServer(gs, f)
	runtimeapi.RegisterRuntimeServiceServer(gs, f)
	f.mu.Lock()
	f.server = gs
	f.mu.Unlock()
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)
	return "unix://" + path
}
