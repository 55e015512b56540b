//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/promtest"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/testenv"
)

// proxy is one cri-mirror-proxy instance in front of a runtime (the shared containerd unless
// the test says otherwise), with its own registries.conf, state dir, socket and metrics port.
type proxy struct {
	t           *testing.T
	dir         string
	sock        string
	conf        string
	confDir     string
	stateDir    string
	metricsAddr string
	opts        proxyOpts
	runtime     *criRuntime
	proc        *process
	conn        *grpc.ClientConn
	img         runtimeapi.ImageServiceClient
	rt          runtimeapi.RuntimeServiceClient
}

// proxyOpts are the settings of a proxy that differ from the usual test proxy.
type proxyOpts struct {
	runtime *criRuntime // the runtime behind the proxy; default the shared containerd
	args    []string    // extra flags of serve, after the usual ones (a repeated flag wins)
}

// startProxy starts a proxy with registries.conf content conf. The test's cleanup stops it and
// prints its log when the test failed.
func startProxy(t *testing.T, conf string) *proxy {
	t.Helper()
	return startProxyWith(t, conf, proxyOpts{})
}

// startProxyOn starts a proxy in front of the runtime rt.
func startProxyOn(t *testing.T, rt *criRuntime, conf string) *proxy {
	t.Helper()
	return startProxyWith(t, conf, proxyOpts{runtime: rt})
}

// startProxyWith is startProxy with other settings.
func startProxyWith(t *testing.T, conf string, opts proxyOpts) *proxy {
	t.Helper()
	if env.proxyErr != nil {
		t.Fatalf("no cri-mirror-proxy binary: %v", env.proxyErr)
	}
	env.nproxies++
	dir := filepath.Join(env.dir, fmt.Sprintf("p%d", env.nproxies))
	p := &proxy{
		t:        t,
		dir:      dir,
		sock:     filepath.Join(dir, "cri.sock"),
		conf:     filepath.Join(dir, "registries.conf"),
		confDir:  filepath.Join(dir, "registries.conf.d"),
		stateDir: filepath.Join(dir, "state"),
		opts:     opts,
		runtime:  opts.runtime,
	}
	if p.runtime == nil {
		p.runtime = env.containerdRuntime()
	}
	for _, d := range []string{p.confDir, p.stateDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p.writeConf(conf)
	t.Cleanup(func() {
		if t.Failed() {
			p.dumpLog()
		}
		p.stop()
	})
	p.start()
	return p
}

func (p *proxy) writeConf(conf string) {
	p.t.Helper()
	if err := os.WriteFile(p.conf, []byte(conf), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func (p *proxy) logPath() string { return filepath.Join(p.dir, "proxy.log") }

// start (re)starts the process with the same socket, config and state dir.
func (p *proxy) start() {
	t := p.t
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	p.metricsAddr = fmt.Sprintf("127.0.0.1:%d", port)
	args := []string{env.proxyBin, "serve",
		"--listen", "unix://" + p.sock,
		"--runtime-endpoint", "unix://" + p.runtime.sock,
		"--registries-conf", p.conf,
		"--registries-conf-dir", p.confDir,
		"--state-dir", p.stateDir,
		"--metrics-address", p.metricsAddr,
		"--log-level", "debug"}
	p.proc, err = startProcess("cri-mirror-proxy", p.logPath(), append(args, p.opts.args...)...)
	if err != nil {
		t.Fatal(err)
	}
	if p.conn, err = dialCRI(p.sock); err != nil {
		t.Fatal(err)
	}
	p.img = runtimeapi.NewImageServiceClient(p.conn)
	p.rt = runtimeapi.NewRuntimeServiceClient(p.conn)
	err = waitFor(30*time.Second, "cri-mirror-proxy socket "+p.sock+" and /readyz", func() error {
		if !p.proc.running() {
			return fmt.Errorf("proxy exited: %s", p.proc.exitState())
		}
		if _, err := os.Stat(p.sock); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := p.img.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{}); err != nil {
			return err
		}
		_, err := p.get("/readyz")
		return err
	})
	if err != nil {
		t.Fatalf("%v\n----- proxy log -----\n%s", err, logTail(p.logPath(), 40))
	}
}

// stop sends SIGTERM and reports whether the proxy stopped gracefully within 15s.
func (p *proxy) stop() bool {
	if p.conn != nil {
		p.conn.Close()
		p.conn = nil
	}
	if p.proc == nil {
		return true
	}
	ok := p.proc.stop(15 * time.Second)
	return ok
}

// restart stops the proxy (asserting a graceful stop that removes the socket) and starts it
// again with the same state dir.
func (p *proxy) restart() {
	p.t.Helper()
	if !p.stop() {
		p.t.Errorf("proxy did not stop within 15s of SIGTERM")
	}
	if _, err := os.Stat(p.sock); !errors.Is(err, os.ErrNotExist) {
		p.t.Errorf("socket %s still there after SIGTERM (stat: %v)", p.sock, err)
		os.Remove(p.sock)
	}
	p.start()
}

// reload rewrites registries.conf, sends SIGHUP and waits until a successful reload is counted.
func (p *proxy) reload(conf string) {
	p.t.Helper()
	const reloads = "cri_mirror_config_reloads_total"
	before := p.metrics().Sum(reloads, nil)
	p.writeConf(conf)
	if err := p.proc.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		p.t.Fatal(err)
	}
	err := waitFor(10*time.Second, reloads+" to grow", func() error {
		if n := p.metrics().Sum(reloads, nil); n <= before {
			return fmt.Errorf("still %v", n)
		}
		return nil
	})
	if err != nil {
		p.t.Fatal(err)
	}
	if m := p.metrics(); m.Sum(reloads, map[string]string{"result": "success"}) < 1 {
		p.t.Fatalf("the reload of a valid file was not counted as a success:\n%s", m.Dump(reloads))
	}
}

func (p *proxy) dumpLog() {
	p.t.Logf("----- proxy log %s (last 120 lines) -----\n%s", p.logPath(), logTail(p.logPath(), 120))
	p.t.Logf("----- %s log (last 30 lines) -----\n%s", p.runtime.name, logTail(p.runtime.logPath, 30))
}

func (p *proxy) get(path string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + p.metricsAddr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return string(b), nil
}

func (p *proxy) metrics() promtest.Set {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := promtest.Scrape(ctx, p.metricsAddr)
	if err != nil {
		p.t.Fatalf("scraping metrics: %v", err)
	}
	return m
}

// --- CRI calls through the proxy ---------------------------------------------------------------

func callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Minute)
}

func (p *proxy) pull(ref string) (string, error) {
	ctx, cancel := callCtx()
	defer cancel()
	resp, err := p.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		return "", err
	}
	return resp.GetImageRef(), nil
}

// mustPull pulls ref and checks that the returned image ref is the runtime's id of want.
func (p *proxy) mustPull(ref string, want pushedImage) string {
	p.t.Helper()
	id, err := p.pull(ref)
	if err != nil {
		p.t.Fatalf("PullImage(%s) through the proxy: %v", ref, err)
	}
	if wantID := p.runtime.id(want); id != wantID {
		p.t.Fatalf("PullImage(%s) = %s, want %s (the image pushed to the candidate that should serve it)", ref, id, wantID)
	}
	return id
}

// mustPullFromSource pulls ref, which the source registry serves with want, and checks the
// answer: the runtime's own, as no mirror name is there to hide (criRuntime.sourceAnswer). It
// returns the runtime's id of want.
func (p *proxy) mustPullFromSource(ref string, want pushedImage) string {
	p.t.Helper()
	got, err := p.pull(ref)
	if err != nil {
		p.t.Fatalf("PullImage(%s) through the proxy: %v", ref, err)
	}
	if wantRef := p.runtime.sourceAnswer(ref, want); got != wantRef {
		p.t.Fatalf("PullImage(%s) = %s, want %s (%s's answer for the image the source serves)", ref, got, wantRef, p.runtime.name)
	}
	return p.runtime.id(want)
}

// status returns ImageStatus(ref), nil when the runtime does not have it.
func (p *proxy) status(ref string) *runtimeapi.Image {
	p.t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	resp, err := p.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		p.t.Fatalf("ImageStatus(%s) through the proxy: %v", ref, err)
	}
	return resp.GetImage()
}

func (p *proxy) list() []*runtimeapi.Image {
	p.t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	resp, err := p.img.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		p.t.Fatalf("ListImages through the proxy: %v", err)
	}
	return resp.GetImages()
}

func (p *proxy) remove(ref string) error {
	ctx, cancel := callCtx()
	defer cancel()
	_, err := p.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	return err
}

// crictl runs crictl against the proxy socket (as both runtime and image endpoint).
func (p *proxy) crictl(args ...string) (string, string, error) {
	full := append([]string{env.crictl, "--runtime-endpoint", "unix://" + p.sock,
		"--image-endpoint", "unix://" + p.sock, "--timeout", "60s"}, args...)
	return run(2*time.Minute, "", nil, full...)
}

func (p *proxy) mustCrictl(args ...string) string {
	p.t.Helper()
	out, stderr, err := p.crictl(args...)
	if err != nil {
		p.t.Fatalf("crictl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, stderr)
	}
	return out
}

// resolve runs `cri-mirror-proxy resolve` with the proxy's configuration and returns the
// candidate references (first tab-separated field of each line).
func (p *proxy) resolve(ref string) []string {
	p.t.Helper()
	out, stderr, err := run(time.Minute, "", nil, env.proxyBin, "resolve",
		"--registries-conf", p.conf, "--registries-conf-dir", p.confDir, ref)
	if err != nil {
		p.t.Fatalf("cri-mirror-proxy resolve %s: %v\n%s%s", ref, err, out, stderr)
	}
	var refs []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(strings.SplitN(line, "\t", 2)[0]); len(f) > 0 {
			refs = append(refs, f[0])
		}
	}
	return refs
}

// --- the shared containerd directly -------------------------------------------------------------

// cleanImages is the usual start of a test in front of the shared containerd: an empty image
// store now and after the test.
func cleanImages(t *testing.T) { env.containerdRuntime().cleanImages(t) }

// --- assertions ----------------------------------------------------------------------------------

// checkNames asserts that img carries exactly the original tags wantTags (any order) and that
// every repo digest is in one of the original repositories; nothing may name the mirror.
func checkNames(t *testing.T, what string, img *runtimeapi.Image, wantTags []string, wantDigest string) {
	t.Helper()
	if img == nil {
		t.Fatalf("%s: image not found", what)
	}
	got := append([]string(nil), img.GetRepoTags()...)
	want := append([]string(nil), wantTags...)
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%s: repo_tags = %q, want exactly %q", what, img.GetRepoTags(), wantTags)
	}
	repos := map[string]bool{}
	for _, tag := range wantTags {
		repos[testenv.MustRepository(tag)] = true
	}
	if len(img.GetRepoDigests()) == 0 {
		t.Errorf("%s: no repo_digests", what)
	}
	for _, d := range img.GetRepoDigests() {
		repo, dg, ok := strings.Cut(d, "@")
		if !ok || !repos[repo] {
			t.Errorf("%s: repo_digest %q is not in an original repository %v", what, d, keys(repos))
		}
		if wantDigest != "" && dg != wantDigest {
			t.Errorf("%s: repo_digest %q, want digest %s", what, d, wantDigest)
		}
	}
	checkNoMirrorName(t, what, img)
}

func checkNoMirrorName(t *testing.T, what string, img *runtimeapi.Image) {
	t.Helper()
	for _, n := range append(append([]string(nil), img.GetRepoTags()...), img.GetRepoDigests()...) {
		if strings.HasPrefix(n, env.mirror.host+"/") || strings.HasPrefix(n, env.source.host+"/") {
			t.Errorf("%s: image %s is shown under the registry name %q; only original names may show", what, img.GetId(), n)
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func findImage(images []*runtimeapi.Image, id string) *runtimeapi.Image {
	for _, img := range images {
		if img.GetId() == id {
			return img
		}
	}
	return nil
}

// crictlImage is one entry of `crictl images -o json` / `crictl inspecti -o json`.
type crictlImage struct {
	ID          string   `json:"id"`
	RepoTags    []string `json:"repoTags"`
	RepoDigests []string `json:"repoDigests"`
}

func (p *proxy) crictlImages() []crictlImage {
	p.t.Helper()
	out := p.mustCrictl("images", "-o", "json")
	var v struct {
		Images []crictlImage `json:"images"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		p.t.Fatalf("crictl images -o json: %v\n%s", err, out)
	}
	return v.Images
}

func (p *proxy) crictlInspect(ref string) crictlImage {
	p.t.Helper()
	out := p.mustCrictl("inspecti", "-o", "json", ref)
	var v struct {
		Status crictlImage `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		p.t.Fatalf("crictl inspecti -o json %s: %v\n%s", ref, err, out)
	}
	return v.Status
}

// grpcMessage is the message of a gRPC status error (or the error text).
func grpcMessage(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Code().String() + ": " + s.Message()
	}
	return err.Error()
}
