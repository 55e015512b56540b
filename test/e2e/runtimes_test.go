//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/testenv"
)

// criRuntime is a CRI runtime the proxy is tested in front of: the shared containerd or the
// shared CRI-O. The tests of the proxy's own behaviour run once in front of each (eachRuntime);
// what the runtimes do differently is said here, so that a test states one expectation.
type criRuntime struct {
	name        string // the subtest name: "containerd" or "crio"
	runtimeName string // what it answers to Version
	sock        string
	img         runtimeapi.ImageServiceClient
	logPath     string
	unavailable error // why the runtime is not there (CRI-O not built); its subtests fail with it

	// another starts a runtime of the same kind under dir, of the test's own, and returns it
	// with the function that stops it; on a dir that holds one already, it starts again on
	// the same storage and socket.
	another func(dir string) (*criRuntime, func(), error)

	// bareIDs: image ids are bare hex (CRI-O), not sha256:<hex> (containerd).
	bareIDs bool
	// certsDir is containerd's certs.d, where a registry host is made reachable. CRI-O
	// reaches any 127.0.0.1 registry over plain HTTP by itself, and another name through its
	// registries.conf (reach).
	certsDir string
	reach    func(t *testing.T, host, addr string)
	// userAgent starts the User-Agent of its registry requests.
	userAgent string
	// pullLine matches the line the runtime logs for each PullImage it receives; its group
	// is the reference asked for.
	pullLine *regexp.Regexp
	// filtersList: ListImages honours its filter (CRI-O); containerd answers every image.
	filtersList bool
	// reportsProgress: the runtime shows a pull's downloads (containerd's content service),
	// which the proxy reads to abandon a stalled mirror attempt; CRI-O answers it with
	// Unimplemented.
	reportsProgress bool
	// checksTagManifest: a manifest pulled by tag is checked against the digest the
	// registry announces (containerd); CRI-O takes the bytes it gets.
	checksTagManifest bool
	// digestRefs: PullImage answers with a digest reference in the repository pulled
	// (CRI-O), not the image id (containerd). The proxy answers a mirror pull with the id
	// whatever the runtime, and a pull the source served as the runtime does.
	digestRefs bool
	// credsToRelocatedHost: a pull's credentials go to the server a host name is configured
	// to lead to (containerd's certs.d); CRI-O sends them only to the host the reference names.
	credsToRelocatedHost bool
	// marksUnavailable: a pull from a registry it cannot reach fails with a message that
	// starts with "RegistryUnavailable", which kubelet shows as the reason (CRI-O).
	marksUnavailable bool
	// instanceDigests: after a pull by an index, repo_digests name the index and the
	// platform's manifest (CRI-O); containerd names the index only.
	instanceDigests bool
}

// The two runtimes' PullImage log lines (containerd: msg="PullImage \"REF\"", and a second
// line with what it returns; CRI-O: msg="Pulling image: REF").
var (
	containerdPullLine = regexp.MustCompile(`msg="PullImage \\"([^"\\]+)\\""`)
	crioPullLine       = regexp.MustCompile(`msg="Pulling image: ([^"]+)"`)
)

func newContainerdRuntime(c *containerd) *criRuntime {
	return &criRuntime{name: "containerd", runtimeName: "containerd", userAgent: "containerd", sock: c.sock, img: c.img, logPath: c.proc.logPath,
		certsDir: testenv.ContainerdAt(c.dir).Certs, pullLine: containerdPullLine, checksTagManifest: true, credsToRelocatedHost: true, reportsProgress: true,
		another: func(dir string) (*criRuntime, func(), error) {
			c, err := startContainerd(dir, env.ctdHosts, env.closedURL())
			if err != nil {
				return nil, func() {}, err
			}
			return newContainerdRuntime(c), c.close, nil
		}}
}

func newCRIORuntime(c *crio) *criRuntime {
	return &criRuntime{name: "crio", runtimeName: "cri-o", userAgent: "cri-o", sock: c.sock, img: c.img, logPath: c.proc.logPath,
		reach: c.reach, bareIDs: true, digestRefs: true, pullLine: crioPullLine, filtersList: true, instanceDigests: true, marksUnavailable: true,
		another: func(dir string) (*criRuntime, func(), error) {
			c, err := env.startCRIO(dir)
			if err != nil {
				return nil, func() {}, err
			}
			return newCRIORuntime(c), func() {
				if err := c.close(); err != nil {
					fmt.Fprintf(os.Stderr, "e2e: stopping CRI-O under %s: %v\n", dir, err)
				}
			}, nil
		}}
}

// containerdRuntime is the shared containerd, the runtime of the tests that are not run on
// each runtime.
func (h *harness) containerdRuntime() *criRuntime { return h.runtimes[0] }

// eachRuntime runs test as a subtest in front of each runtime, each beginning and ending with
// an empty image store on its runtime.
func eachRuntime(t *testing.T, test func(t *testing.T, rt *criRuntime)) {
	t.Helper()
	for _, rt := range env.runtimes {
		t.Run(rt.name, func(t *testing.T) {
			if rt.unavailable != nil {
				t.Fatalf("no %s to test in front of: %v", rt.name, rt.unavailable)
			}
			rt.cleanImages(t)
			test(t, rt)
		})
	}
}

// id is the image id the runtime reports for a pushed image.
func (rt *criRuntime) id(p pushedImage) string {
	return rt.idForm(p.ID)
}

// idForm is image id (sha256:<hex>) as the runtime reports it.
func (rt *criRuntime) idForm(id string) string {
	if rt.bareIDs {
		return store.IDKey(id)
	}
	return id
}

// sourceAnswer is what PullImage of ref answers when the source registry serves want.
func (rt *criRuntime) sourceAnswer(ref string, want pushedImage) string {
	if rt.digestRefs {
		return testenv.MustRepository(ref) + "@" + want.Digest
	}
	return rt.id(want)
}

// reset removes every image from the runtime (directly, not through a proxy).
func (rt *criRuntime) reset(t *testing.T) {
	t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	resp, err := rt.img.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatalf("ListImages on %s: %v", rt.name, err)
	}
	for _, img := range resp.GetImages() {
		if _, err := rt.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: img.GetId()}}); err != nil {
			t.Fatalf("RemoveImage(%s) on %s: %v", img.GetId(), rt.name, err)
		}
	}
}

// cleanImages empties the runtime's image store now and after the test.
func (rt *criRuntime) cleanImages(t *testing.T) {
	t.Helper()
	rt.reset(t)
	t.Cleanup(func() { rt.reset(t) })
}

// has reports whether the runtime itself has the image id.
func (rt *criRuntime) has(t *testing.T, id string) bool {
	t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	resp, err := rt.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: id}})
	if err != nil {
		t.Fatalf("ImageStatus(%s) on %s: %v", id, rt.name, err)
	}
	return resp.GetImage() != nil
}

// remove removes the image id straight at the runtime, behind the proxy's back.
func (rt *criRuntime) remove(t *testing.T, id string) {
	t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	if _, err := rt.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: id}}); err != nil {
		t.Fatalf("RemoveImage(%s) straight at %s: %v", id, rt.name, err)
	}
}

// allowHost makes the runtime reach host at server (e.g. "http://127.0.0.1:PORT"), as the
// harness does for its registries, until the test ends. containerd reads certs.d at every
// pull, so no restart is needed.
func (rt *criRuntime) allowHost(t *testing.T, host, server string) {
	t.Helper()
	if rt.certsDir == "" {
		if !strings.HasPrefix(host, "127.0.0.1:") {
			rt.reach(t, host, strings.TrimPrefix(server, "http://"))
		}
		return
	}
	if err := testenv.WriteHost(rt.certsDir, host, server); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Join(rt.certsDir, host)) })
}

// pulls returns the references of every PullImage the runtime has logged, in order.
func (rt *criRuntime) pulls() []string {
	var refs []string
	for _, m := range rt.pullLine.FindAllStringSubmatch(readFile(rt.logPath), -1) {
		refs = append(refs, m[1])
	}
	return refs
}

// countPulls counts the logged pulls whose reference satisfies match.
func (rt *criRuntime) countPulls(match func(ref string) bool) int {
	n := 0
	for _, ref := range rt.pulls() {
		if match(ref) {
			n++
		}
	}
	return n
}

// fromRuntime reports whether a registry request with this User-Agent came from the runtime
// (not from the proxy's probe or the test's pushes).
func (rt *criRuntime) fromRuntime(userAgent string) bool {
	return strings.HasPrefix(userAgent, rt.userAgent)
}
