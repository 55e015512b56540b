//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/testenv"
)

// Hosts that containerd resolves through certs.d. sourceHost is the "public" source registry of
// the tests, served by a second local registry; the public hosts and blockedHost lead to a closed
// port, so nothing ever leaves 127.0.0.1 and a pull from them fails at once.
const (
	sourceHost  = "source.test"
	blockedHost = "blocked.test"
)

// env is the shared environment: one containerd, one CRI-O, a mirror registry and a source
// registry, images pushed once. Each test starts its own proxy in front of the shared
// containerd, or in front of each runtime in turn (eachRuntime).
var env *harness

type harness struct {
	root       string // repository root
	dir        string // short temp dir: sockets, configs, logs, containerd root
	crictl     string
	closedPort int
	mirror     *registry // hosts the mirror repositories (m1, m2, dig, tag, hub, ...)
	source     *registry // reached by containerd as source.test
	ctd        *containerd
	ctdHosts   map[string]string // each registry host containerd reaches, at its server URL
	crio       *crio             // nil when CRI-O is not built; runtimes[1] says why
	runtimes   []*criRuntime     // containerd first, then CRI-O
	proxyBin   string
	proxyErr   error // why the proxy binary could not be built
	pushed     map[string]testenv.Pushed
	nproxies   int
	teardown   sync.Once
}

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	start := time.Now()
	h, err := setUp()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: setting up the environment failed: %v\n", err)
		if h != nil {
			h.dumpLogs()
			h.tearDown()
		}
		return 1
	}
	env = h
	fmt.Fprintf(os.Stderr, "e2e: environment up in %s (dir %s, mirror %s, source %s as %s)\n",
		time.Since(start).Round(time.Millisecond), h.dir, h.mirror.host, h.source.host, sourceHost)

	// Ctrl-C or SIGTERM: stop the children by pid and remove the temp dir before exiting.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "e2e: %s: tearing down\n", s)
		h.tearDown()
		os.Exit(2)
	}()

	code := m.Run()
	if code != 0 {
		h.dumpLogs()
	}
	h.tearDown()
	return code
}

func setUp() (*harness, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the e2e tests run containerd and need root")
	}
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	h := &harness{root: root, pushed: map[string]testenv.Pushed{}}
	for _, tool := range []string{"containerd", "runc", "docker-registry"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found on PATH: run `bash test/tools.sh` (or `make tools`)", tool)
		}
	}
	h.crictl = filepath.Join(root, "test", ".bin", "crictl")
	if _, err := os.Stat(h.crictl); err != nil {
		if h.crictl, err = exec.LookPath("crictl"); err != nil {
			return nil, errors.New("crictl not found in test/.bin or on PATH: run `bash test/tools.sh` (or `make tools`)")
		}
	}
	// Unix socket paths are limited to 108 bytes: keep the base short.
	if h.dir, err = os.MkdirTemp("", "cmp"); err != nil {
		return nil, err
	}
	if h.closedPort, err = freePort(); err != nil {
		return h, err
	}

	// Build the proxy while the environment comes up. A build failure fails the proxy tests,
	// not the environment: the containerd smoke test still runs.
	built := make(chan struct{})
	go func() {
		defer close(built)
		h.proxyBin, h.proxyErr = buildProxy(root, h.dir)
	}()

	if h.mirror, err = startRegistry(h.dir, "mirror"); err != nil {
		<-built
		return h, err
	}
	if h.source, err = startRegistry(h.dir, "source"); err != nil {
		<-built
		return h, err
	}
	h.ctdHosts = map[string]string{
		h.mirror.host: "http://" + h.mirror.host,
		h.source.host: "http://" + h.source.host,
		sourceHost:    "http://" + h.source.host,
		blockedHost:   h.closedURL(),
		fmt.Sprintf("127.0.0.1:%d", h.closedPort): h.closedURL(),
	}
	if h.ctd, err = startContainerd(h.dir, h.ctdHosts, h.closedURL()); err != nil {
		<-built
		return h, err
	}
	h.runtimes = []*criRuntime{newContainerdRuntime(h.ctd), h.startSharedCRIO()}
	if err = h.pushFixtures(); err != nil {
		<-built
		return h, fmt.Errorf("pushing test images: %w", err)
	}
	<-built
	if h.proxyErr != nil {
		fmt.Fprintf(os.Stderr, "e2e: WARNING: the proxy binary is not available, proxy tests will fail: %v\n", h.proxyErr)
	}
	return h, nil
}

// startSharedCRIO starts the CRI-O the tests share. A CRI-O that is not built or does not
// start fails the tests in front of it, not the environment: the containerd half still runs.
func (h *harness) startSharedCRIO() *criRuntime {
	c, err := h.startCRIO(filepath.Join(h.dir, "crio"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: WARNING: no CRI-O, the tests in front of it will fail: %v\n", err)
		return &criRuntime{name: "crio", unavailable: err}
	}
	h.crio = c
	return newCRIORuntime(c)
}

func (h *harness) closedURL() string { return fmt.Sprintf("http://127.0.0.1:%d", h.closedPort) }

func (h *harness) tearDown() {
	h.teardown.Do(func() {
		if h.ctd != nil {
			h.ctd.close()
		}
		if h.crio != nil {
			if err := h.crio.close(); err != nil {
				fmt.Fprintf(os.Stderr, "e2e: stopping CRI-O: %v\n", err)
			}
		}
		for _, r := range []*registry{h.mirror, h.source} {
			if r != nil {
				r.proc.stop(5 * time.Second)
			}
		}
		if os.Getenv("E2E_KEEP") == "1" {
			fmt.Fprintf(os.Stderr, "e2e: keeping %s (E2E_KEEP=1)\n", h.dir)
			return
		}
		if h.dir != "" {
			if err := os.RemoveAll(h.dir); err != nil {
				fmt.Fprintf(os.Stderr, "e2e: removing %s: %v\n", h.dir, err)
			}
		}
	})
}

func (h *harness) dumpLogs() {
	if h.ctd != nil && h.ctd.proc != nil {
		fmt.Fprintf(os.Stderr, "\n----- containerd log (%s, last 60 lines) -----\n%s\n", h.ctd.proc.logPath, logTail(h.ctd.proc.logPath, 60))
	}
	if h.crio != nil {
		fmt.Fprintf(os.Stderr, "\n----- crio log (%s, last 40 lines) -----\n%s\n", h.crio.proc.logPath, logTail(h.crio.proc.logPath, 40))
	}
	for _, r := range []*registry{h.mirror, h.source} {
		if r != nil && r.proc != nil {
			fmt.Fprintf(os.Stderr, "\n----- registry %s log (%s, last 20 lines) -----\n%s\n", r.host, r.proc.logPath, logTail(r.proc.logPath, 20))
		}
	}
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for i := 0; i < 10; i++ {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		dir = filepath.Dir(dir)
	}
	return "", errors.New("go.mod not found above the working directory")
}

func buildProxy(root, dir string) (string, error) {
	if bin := os.Getenv("CRI_MIRROR_PROXY_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("CRI_MIRROR_PROXY_BIN: %w", err)
		}
		return bin, nil
	}
	// The Makefile's recipe (build tags, static, version stamp), into the temp dir.
	bin := filepath.Join(dir, "cri-mirror-proxy")
	_, stderr, err := run(10*time.Minute, root, nil, "make", "--no-print-directory", "build", "BIN="+bin)
	if err != nil {
		return "", fmt.Errorf("make build: %v\n%s", err, stderr)
	}
	return bin, nil
}

// registry is a docker-registry (distribution 2.8) serving plain HTTP on 127.0.0.1.
type registry struct {
	host string // 127.0.0.1:PORT
	proc *process
}

func startRegistry(dir, name string) (*registry, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	host := fmt.Sprintf("127.0.0.1:%d", port)
	// Log level info: every request is logged, so tests can tell which registry was asked.
	cfgPath, err := testenv.WriteRegistry(filepath.Join(dir, name), host, "info")
	if err != nil {
		return nil, err
	}
	p, err := startProcess("registry "+name, filepath.Join(dir, name+".log"), "docker-registry", "serve", cfgPath)
	if err != nil {
		return nil, err
	}
	r := &registry{host: host, proc: p}
	client := &http.Client{Timeout: 2 * time.Second}
	err = waitFor(20*time.Second, "registry "+name+" on "+host, func() error {
		if !p.running() {
			return fmt.Errorf("registry exited: %s\n%s", p.exitState(), logTail(p.logPath, 20))
		}
		resp, err := client.Get("http://" + host + "/v2/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		p.stop(5 * time.Second)
		return nil, err
	}
	return r, nil
}

// manifestRequests counts the manifest requests for repository repo (e.g. "m1/e2e/order") in
// the registry's log, leaving out the test's own pushes (user agent go-containerregistry).
func (r *registry) manifestRequests(repo string) int {
	b, err := os.ReadFile(r.proc.logPath)
	if err != nil {
		return -1
	}
	re := regexp.MustCompile(`msg="response completed[^"]*".*http\.request\.uri="?/v2/` + regexp.QuoteMeta(repo) + `/manifests/`)
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if re.MatchString(line) && !strings.Contains(line, "useragent=go-containerregistry") {
			n++
		}
	}
	return n
}

// manifestRequestsFrom returns a counter of the manifest requests for repo made after this
// call: the tests that run in front of each runtime ask the same repositories once per runtime.
func (r *registry) manifestRequestsFrom(repo string) func() int {
	before := r.manifestRequests(repo)
	return func() int { return r.manifestRequests(repo) - before }
}

// containerd runs with its own config, root, state and socket; registries are configured only
// through certs.d hosts.toml files (no mirrors of its own).
type containerd struct {
	dir  string
	sock string
	proc *process
	conn *grpc.ClientConn
	img  runtimeapi.ImageServiceClient
	rt   runtimeapi.RuntimeServiceClient
}

// startContainerd configures a containerd under dir/ctd (testenv.WriteContainerd: every host
// of hosts at its server URL, the public registries at closed) and starts it.
func startContainerd(dir string, hosts map[string]string, closed string) (*containerd, error) {
	layout, err := testenv.WriteContainerd(filepath.Join(dir, "ctd"), hosts, closed)
	if err != nil {
		return nil, err
	}
	c := &containerd{dir: layout.Dir, sock: layout.Socket}
	p, err := startProcess("containerd", filepath.Join(dir, "containerd.log"), "containerd", "--config", layout.Config)
	if err != nil {
		return nil, err
	}
	c.proc = p
	if c.conn, err = dialCRI(c.sock); err != nil {
		c.close()
		return nil, err
	}
	c.img = runtimeapi.NewImageServiceClient(c.conn)
	c.rt = runtimeapi.NewRuntimeServiceClient(c.conn)
	err = waitFor(30*time.Second, "containerd CRI on "+c.sock, func() error {
		if !p.running() {
			return fmt.Errorf("containerd exited: %s\n%s", p.exitState(), logTail(p.logPath, 30))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := c.img.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
		return err
	})
	if err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (c *containerd) close() {
	if c.conn != nil {
		c.conn.Close()
	}
	if c.proc != nil {
		c.proc.stop(15 * time.Second)
	}
}

func dialCRI(sock string) (*grpc.ClientConn, error) {
	return grpc.NewClient("unix://"+sock,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
}
