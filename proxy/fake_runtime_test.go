package proxy

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeRuntime is a CRI runtime double that behaves like containerd where the
// proxy cares: an image has an id, names and repo digests; a pull names the
// image by the reference it was asked for; removing any name removes the
// image. It records every pull with the auth it received.
type fakeRuntime struct {
	runtimeapi.UnimplementedImageServiceServer
	runtimeapi.UnimplementedRuntimeServiceServer

	mu       sync.Mutex
	registry map[string]string            // pullable reference → content (decides id and digest)
	failures map[string]error             // reference → error its pull returns
	stalls   map[string]bool              // references whose pulls never answer (a black hole)
	images   map[string]*runtimeapi.Image // id → image
	pulls    []pullCall                   // every PullImage, in order
	block    chan struct{}                // when set, pulls wait for it (or their context)
	server   *grpc.Server                 // set by serveFake
	started  chan string                  // when set, receives each pulled reference on arrival

	containers   []fakeContainer // in creation order (fake_containers_test.go)
	reportIDs    bool            // container statuses carry image_id, as newer runtimes do
	listsByNames bool            // ListContainers names images as ContainerStatus does
}

type pullCall struct {
	Image string
	Auth  *runtimeapi.AuthConfig
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{
		registry: map[string]string{},
		failures: map[string]error{},
		stalls:   map[string]bool{},
		images:   map[string]*runtimeapi.Image{},
	}
}

// publish makes ref pullable with the given content.
func (f *fakeRuntime) publish(ref, content string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registry[ref] = content
}

func (f *fakeRuntime) fail(ref string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures[ref] = err
}

// stall makes pulls of ref wait until their caller gives up.
func (f *fakeRuntime) stall(ref string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stalls[ref] = true
}

func (f *fakeRuntime) pulled() []pullCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]pullCall(nil), f.pulls...)
}

func (f *fakeRuntime) pulledRefs() []string {
	var refs []string
	for _, p := range f.pulled() {
		refs = append(refs, p.Image)
	}
	return refs
}

// forget removes an image behind the proxy's back, as `ctr images rm` would.
func (f *fakeRuntime) forget(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.images, id)
}

func digestOf(content string) string {
	return fmt.Sprintf("sha256:%x", sha256.Sum256([]byte("manifest "+content)))
}
func idOf(content string) string {
	return fmt.Sprintf("sha256:%x", sha256.Sum256([]byte("config "+content)))
}

func repoOfRef(ref string) string { return repoOf(ref) }

func (f *fakeRuntime) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	ref := req.GetImage().GetImage()
	f.mu.Lock()
	f.pulls = append(f.pulls, pullCall{Image: ref, Auth: proto.Clone(req.GetAuth()).(*runtimeapi.AuthConfig)})
	block, started := f.block, f.started
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
	id := idOf(content)
	img := f.images[id]
	if img == nil {
		img = &runtimeapi.Image{Id: id, Size: 1234}
		f.images[id] = img
	}
	// A name moves to the image it now points at, as in containerd.
	for otherID, other := range f.images {
		if otherID != id {
			other.RepoTags = without(other.RepoTags, ref)
		}
	}
	if !strings.Contains(ref, "@") {
		img.RepoTags = appendNew(img.RepoTags, ref)
	}
	img.RepoDigests = appendNew(img.RepoDigests, repoOfRef(ref)+"@"+digestOf(content))
	return &runtimeapi.PullImageResponse{ImageRef: id}, nil
}

// find resolves a name, digest reference or id the way containerd does.
func (f *fakeRuntime) find(name string) *runtimeapi.Image {
	if img, ok := f.images[name]; ok {
		return img
	}
	for _, img := range f.images {
		for _, n := range append(append([]string{}, img.RepoTags...), img.RepoDigests...) {
			if n == name {
				return img
			}
		}
	}
	return nil
}

func (f *fakeRuntime) ImageStatus(_ context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	img := f.find(req.GetImage().GetImage())
	if img == nil {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	return &runtimeapi.ImageStatusResponse{Image: proto.Clone(img).(*runtimeapi.Image)}, nil
}

func (f *fakeRuntime) ListImages(_ context.Context, _ *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &runtimeapi.ListImagesResponse{}
	for _, img := range f.images {
		resp.Images = append(resp.Images, proto.Clone(img).(*runtimeapi.Image))
	}
	return resp, nil
}

func (f *fakeRuntime) RemoveImage(_ context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if img := f.find(req.GetImage().GetImage()); img != nil {
		delete(f.images, img.Id)
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}

func (f *fakeRuntime) ImageFsInfo(context.Context, *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	return &runtimeapi.ImageFsInfoResponse{ImageFilesystems: []*runtimeapi.FilesystemUsage{{Timestamp: 1}}}, nil
}

// RuntimeService: enough to see the relay forward unary calls, error
// statuses and server streams.
func (f *fakeRuntime) Version(_ context.Context, req *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{Version: req.GetVersion(), RuntimeName: "fake", RuntimeVersion: "1.0", RuntimeApiVersion: "v1"}, nil
}

func without(list []string, s string) []string {
	out := list[:0]
	for _, v := range list {
		if v != s {
			out = append(out, v)
		}
	}
	return out
}

// shortSocket returns a unix socket path short enough for the 108-byte limit.
func shortSocket(t *testing.T, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cmp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, name)
}

// serveFake serves f on a fresh unix socket and returns its endpoint.
func serveFake(t *testing.T, f *fakeRuntime) string {
	t.Helper()
	path := shortSocket(t, "rt.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	runtimeapi.RegisterImageServiceServer(gs, f)
	runtimeapi.RegisterRuntimeServiceServer(gs, f)
	f.server = gs
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	return "unix://" + path
}

func (f *fakeRuntime) StreamImages(req *runtimeapi.StreamImagesRequest, stream runtimeapi.ImageService_StreamImagesServer) error {
	resp, _ := f.ListImages(stream.Context(), &runtimeapi.ListImagesRequest{Filter: req.GetFilter()})
	for _, img := range resp.Images {
		// One image per message: the proxy must translate every chunk.
		if err := stream.Send(&runtimeapi.StreamImagesResponse{Images: []*runtimeapi.Image{img}}); err != nil {
			return err
		}
	}
	return nil
}
