package proxy

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"go.podman.io/image/v5/docker/reference"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/metrics"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/fakecri"
)

// testRules: docker.io has a tag-only mirror then an "all" mirror; gcr.io/x
// one mirror; quay.io never contacts its source; blocked.test is refused.
const testRules = `
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror-a.test/hub"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "mirror-b.test"
pull-from-mirror = "all"

[[registry]]
prefix = "gcr.io/x"
location = "gcr.io/x"
[[registry.mirror]]
location = "127.0.0.1:5000/mirror/gcr.io/x"

[[registry]]
prefix = "quay.io"
location = "quay.io"
blocked = true
[[registry.mirror]]
location = "mirror-a.test/quay"
pull-from-mirror = "tag-only"

[[registry]]
prefix = "ncs.test"
location = "ncs.test"
blocked = true
[[registry.mirror]]
location = "mirror-x.test/ncs"

[[registry]]
prefix = "blocked.test"
location = "blocked.test"
blocked = true

[aliases]
"ops/tools" = "gcr.io/x/tools"
`

// mapCredentials is a Credentials double: credentials by registry host.
type mapCredentials map[string]*runtimeapi.AuthConfig

func (m mapCredentials) Lookup(ref reference.Named) (*runtimeapi.AuthConfig, error) {
	return m[reference.Domain(ref)], nil
}

// harness runs a proxy Server over a real gRPC unix socket in front of a
// fake runtime (fakecri), with the real resolver and the real alias store.
type harness struct {
	t       *testing.T
	rt      *fakecri.Runtime
	rtConn  *grpc.ClientConn
	dbPath  string
	rules   *resolver.Resolver
	opts    []Option
	metrics *metrics.Metrics
	// registry is where metrics are registered, to read them back.
	registry *prometheus.Registry
	store    *store.Store
	gs       *grpc.Server
	srv      *Server

	conn    *grpc.ClientConn // to the proxy
	images  runtimeapi.ImageServiceClient
	runtime runtimeapi.RuntimeServiceClient
}

func newHarness(t *testing.T, opts ...Option) *harness {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "registries.conf")
	if err := os.WriteFile(conf, []byte(testRules), 0o644); err != nil {
		t.Fatal(err)
	}
	rules, err := resolver.New(conf, filepath.Join(dir, "registries.conf.d"))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, rt: fakecri.New(), dbPath: filepath.Join(dir, "state", "aliases.db"), rules: rules, opts: opts}
	h.rtConn, err = DialRuntime(fakecri.Serve(t, h.rt))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.rtConn.Close() })
	h.start()
	t.Cleanup(h.stop)
	return h
}

// start opens the alias store and serves a new proxy on a new socket.
func (h *harness) start() {
	t := h.t
	t.Helper()
	var err error
	h.store, err = store.Open(h.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	h.metrics = metrics.New()
	h.registry = prometheus.NewRegistry()
	if err := h.metrics.Register(h.registry); err != nil {
		t.Fatal(err)
	}
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	opts := append([]Option{WithMetrics(h.metrics), WithLogger(quiet)}, h.opts...)
	h.srv = New(h.rtConn, h.rules, h.store, opts...)
	h.gs = h.srv.NewGRPCServer()
	sock := fakecri.ShortSocket(t, "proxy.sock")
	l, err := Listen("unix://"+sock, 0o660, -1)
	if err != nil {
		t.Fatal(err)
	}
	go h.gs.Serve(l)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	h.conn = conn
	h.images = runtimeapi.NewImageServiceClient(conn)
	h.runtime = runtimeapi.NewRuntimeServiceClient(conn)
}

func (h *harness) stop() {
	if h.gs != nil {
		h.gs.Stop()
		h.gs = nil
	}
	if h.store != nil {
		h.store.Close()
		h.store = nil
	}
}

// restart stops the proxy and starts a new one on the same alias database.
func (h *harness) restart() {
	h.stop()
	h.start()
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func (h *harness) pull(image string, auth *runtimeapi.AuthConfig) (*runtimeapi.PullImageResponse, error) {
	return h.images.PullImage(ctx(h.t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}, Auth: auth})
}

func (h *harness) mustPull(image string) string {
	h.t.Helper()
	resp, err := h.pull(image, nil)
	if err != nil {
		h.t.Fatalf("pull %s: %v", image, err)
	}
	return resp.GetImageRef()
}

func (h *harness) status(image string) *runtimeapi.Image {
	h.t.Helper()
	resp, err := h.images.ImageStatus(ctx(h.t), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: image}})
	if err != nil {
		h.t.Fatalf("ImageStatus %s: %v", image, err)
	}
	return resp.GetImage()
}

func (h *harness) list(filter string) []*runtimeapi.Image {
	h.t.Helper()
	req := &runtimeapi.ListImagesRequest{}
	if filter != "" {
		req.Filter = &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: filter}}
	}
	resp, err := h.images.ListImages(ctx(h.t), req)
	if err != nil {
		h.t.Fatalf("ListImages: %v", err)
	}
	return resp.GetImages()
}
