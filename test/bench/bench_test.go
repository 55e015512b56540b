package main

// In-process micro-benchmarks of the pass-through path: the same three
// targets as the driver (direct, reference hop, proxy) but everything in one
// process, in front of the fake runtime of test/fakecri instead of
// containerd. They need no root and no containerd, so a change to the proxy's
// hot path can be checked in seconds:
//
//	go test -tags containers_image_openpgp -run '^$' -bench . -benchmem ./test/bench
//
// ns/op and allocs/op cover client, forwarder and runtime together; the
// proxy's own cost is the difference between the proxy and hop rows. One
// process shares one scheduler, so these differences are smaller than the
// driver's, which runs every forwarder as a process of its own: use them to
// compare builds, the driver for the targets. BenchmarkManifestProbe is the
// probe's cost, which every pull from a mirror pays.

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/metrics"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/proxy"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/fakecri"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/testenv"
)

// microEnv is one set of the three targets in front of one fake runtime.
type microEnv struct {
	direct, hop, proxy *target
	plain, original    string // an image without alias; an original name with one
	close              func()
}

const microMirror = "127.0.0.1:5000/" + mirrorPath

// newMicroEnv serves n images, all but the first with a proxy alias.
func newMicroEnv(b *testing.B, n int) *microEnv {
	b.Helper()
	dir, err := os.MkdirTemp("", "cmpb") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		b.Fatal(err)
	}
	var closers []func()
	env := &microEnv{close: func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		_ = os.RemoveAll(dir)
	}}
	fail := func(err error) {
		env.close()
		b.Fatal(err)
	}
	serve := func(gs *grpc.Server, name string) string {
		sock := filepath.Join(dir, name)
		lis, err := net.Listen("unix", sock)
		if err != nil {
			fail(err)
		}
		go func() { _ = gs.Serve(lis) }()
		closers = append(closers, gs.Stop)
		return sock
	}

	aliases, err := store.Open(filepath.Join(dir, "aliases.db"))
	if err != nil {
		fail(err)
	}
	closers = append(closers, func() { _ = aliases.Close() })
	rt := fakecri.New()
	for i := range n {
		src := numbered(i)
		mirror := microMirror + strings.TrimPrefix(src, "docker.io")
		id := fmt.Sprintf("sha256:%064x", i+1)
		img := &runtimeapi.Image{
			Id:          id,
			RepoTags:    []string{mirror},
			RepoDigests: []string{testenv.MustRepository(mirror) + fmt.Sprintf("@sha256:%064x", i+1<<32)},
			Size:        1234,
			Spec:        &runtimeapi.ImageSpec{Image: id},
		}
		rt.Add(img)
		if i == 0 {
			env.plain = mirror
			continue
		}
		if err := aliases.Put(store.Alias{Name: src, ImageID: id, Mirror: mirror}); err != nil {
			fail(err)
		}
		if i == 1 {
			env.original = src
		}
	}
	rtServer := grpc.NewServer()
	runtimeapi.RegisterImageServiceServer(rtServer, rt)
	rtSock := serve(rtServer, "rt.sock")

	up, err := dial("runtime", rtSock)
	if err != nil {
		fail(err)
	}
	closers = append(closers, up.close)

	h, err := startHop(filepath.Join(dir, "hop.sock"), up.conn)
	if err != nil {
		fail(err)
	}
	closers = append(closers, h.gs.Stop)

	// The proxy's server, wired as cmd/cri-mirror-proxy/serve.go wires it.
	conf := filepath.Join(dir, "registries.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("[[registry]]\nprefix = %q\nlocation = %q\n[[registry.mirror]]\nlocation = %q\n",
		benchPrefix, benchPrefix, microMirror+"/bench")), 0o644); err != nil {
		fail(err)
	}
	rules, err := resolver.New(conf, filepath.Join(dir, "conf.d"))
	if err != nil {
		fail(err)
	}
	m := metrics.New()
	if err := m.Register(prometheus.NewRegistry()); err != nil {
		fail(err)
	}
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	srv := proxy.New(up.conn, rules, aliases, proxy.WithMetrics(m), proxy.WithLogger(quiet))
	gs := srv.NewGRPCServer()
	proxySock := serve(gs, "proxy.sock")

	for _, t := range []struct {
		dst  **target
		name string
		sock string
	}{{&env.direct, "direct", rtSock}, {&env.hop, "hop", h.sock}, {&env.proxy, "proxy", proxySock}} {
		if *t.dst, err = dial(t.name, t.sock); err != nil {
			fail(err)
		}
		closers = append(closers, (*t.dst).close)
	}
	return env
}

func (e *microEnv) targets() []*target { return []*target{e.direct, e.hop, e.proxy} }

func BenchmarkImageStatus(b *testing.B) {
	env := newMicroEnv(b, 10)
	defer env.close()
	for _, t := range env.targets() {
		b.Run(t.name, func(b *testing.B) {
			req := &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: env.plain}}
			for b.Loop() {
				if resp, err := t.images.ImageStatus(context.Background(), req); err != nil || resp.GetImage() == nil {
					b.Fatal(err, resp)
				}
			}
		})
	}
	// The alias path exists only on the proxy.
	b.Run("proxy-by-original-name", func(b *testing.B) {
		req := &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: env.original}}
		for b.Loop() {
			if resp, err := env.proxy.images.ImageStatus(context.Background(), req); err != nil || resp.GetImage() == nil {
				b.Fatal(err, resp)
			}
		}
	})
}

func BenchmarkListImages(b *testing.B) {
	for _, n := range []int{10, 5000} {
		env := newMicroEnv(b, n)
		for _, t := range env.targets() {
			b.Run(fmt.Sprintf("%d/%s", n, t.name), func(b *testing.B) {
				for b.Loop() {
					if got, err := t.count(context.Background()); err != nil || got != n {
						b.Fatal(err, got)
					}
				}
			})
		}
		env.close()
	}
}
