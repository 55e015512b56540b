//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/testenv"
)

// crio is a CRI-O with its own configuration, storage and socket under dir
// (testenv.WriteCRIO) and no mirrors of its own: the proxy in front decides.
type crio struct {
	dir  string
	sock string
	proc *process
	conn *grpc.ClientConn
	img  runtimeapi.ImageServiceClient
}

// crioBinaries returns crio and pinns as test/tools.sh builds them into test/.bin, or an error
// that says how to get them.
func crioBinaries(root string) (crioBin, pinns string, err error) {
	bin := filepath.Join(root, "test", ".bin")
	for _, tool := range []string{"crio", "pinns"} {
		if _, err := os.Stat(filepath.Join(bin, tool)); err != nil {
			return "", "", fmt.Errorf("%s not found in test/.bin: run `bash test/tools.sh` (or `make tools`)", tool)
		}
	}
	return filepath.Join(bin, "crio"), filepath.Join(bin, "pinns"), nil
}

// startCRIO configures a CRI-O under dir and starts it; when dir already holds one, it starts
// again on the same storage and socket. The registry hosts of the environment are reached as
// themselves, the public ones at the closed port.
func (h *harness) startCRIO(dir string) (*crio, error) {
	crioBin, pinns, err := crioBinaries(h.root)
	if err != nil {
		return nil, err
	}
	hosts := map[string]string{
		h.mirror.host: h.mirror.host,
		h.source.host: h.source.host,
		sourceHost:    h.source.host,
	}
	layout, err := testenv.WriteCRIO(dir, pinns, hosts, fmt.Sprintf("127.0.0.1:%d", h.closedPort))
	if err != nil {
		return nil, err
	}
	p, err := startProcess("crio", filepath.Join(dir, "crio.log"), append([]string{crioBin}, layout.Args()...)...)
	if err != nil {
		return nil, err
	}
	c := &crio{dir: dir, sock: layout.Socket, proc: p}
	if c.conn, err = dialCRI(c.sock); err != nil {
		c.close()
		return nil, err
	}
	c.img = runtimeapi.NewImageServiceClient(c.conn)
	err = waitFor(60*time.Second, "CRI-O CRI on "+c.sock, func() error {
		if !p.running() {
			return fmt.Errorf("crio exited: %s\n%s", p.exitState(), logTail(p.logPath, 30))
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

// close stops CRI-O by pid and unmounts what it left mounted under its directory (its overlay
// driver mounts its home and unmounts it when stopped; a killed CRI-O leaves it).
func (c *crio) close() error {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
	if c.proc != nil {
		c.proc.stop(15 * time.Second)
	}
	return unmountUnder(c.dir)
}

// unmountUnder unmounts what is still mounted below dir, deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("unmount under %s: %w", dir, err)
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			mounts = append(mounts, fields[4])
		}
	}
	var errs []error
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := syscall.Unmount(mounts[i], syscall.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mounts[i], err))
		}
	}
	return errors.Join(errs...)
}

// TestCRIONames: in front of CRI-O, which answers PullImage with a digest reference in the
// repository it pulled and reports bare-hex ids, an image pulled from a mirror shows under its
// original names in ImageStatus, ListImages and crictl, PullImage answers with its id, and
// crictl rmi by an original name removes it from CRI-O.
func TestCRIONames(t *testing.T) {
	rt := env.runtimes[1]
	if rt.unavailable != nil {
		t.Fatalf("no CRI-O to test in front of: %v", rt.unavailable)
	}
	rt.cleanImages(t)
	// The proxy watches a mirror pull's progress through containerd's content service; CRI-O
	// has none, and the proxy counts on the answer being Unimplemented to leave it alone.
	ctx, cancel := callCtx()
	defer cancel()
	if _, err := contentapi.NewContentClient(env.crio.conn).ListStatuses(ctx, &contentapi.ListStatusesRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("CRI-O's answer to containerd's content ListStatuses = %v, want Unimplemented", err)
	}
	p := startProxyWith(t, registriesConf(sourceRule("m1")), proxyOpts{runtime: rt})
	refs := []string{sourceHost + "/e2e/tags:1", sourceHost + "/e2e/tags:2"}
	want := env.image("M:m1/e2e/tags:1")
	id := store.IDKey(want.ID) // CRI-O's form of the id
	for _, ref := range refs {
		got, err := p.pull(ref)
		if err != nil {
			t.Fatalf("PullImage(%s) through the proxy: %v", ref, err)
		}
		if got != id {
			t.Fatalf("PullImage(%s) = %q, want the image id %s", ref, got, id)
		}
	}
	for _, name := range append([]string{id}, refs...) {
		checkNames(t, "ImageStatus("+name+")", p.status(name), refs, want.Digest)
	}
	checkNames(t, "ListImages", findImage(p.list(), id), refs, want.Digest)
	// CRI-O honours a ListImages filter; an original name reaches it as the image id.
	for _, name := range refs {
		ctx, cancel := callCtx()
		resp, err := p.img.ListImages(ctx, &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: name}}})
		cancel()
		if err != nil {
			t.Fatalf("ListImages(filter %s): %v", name, err)
		}
		if len(resp.GetImages()) != 1 {
			t.Fatalf("ListImages(filter %s) = %d images, want the one", name, len(resp.GetImages()))
		}
		checkNames(t, "ListImages(filter "+name+")", resp.GetImages()[0], refs, want.Digest)
	}
	table := p.mustCrictl("images")
	for _, tag := range []string{"1", "2"} {
		if !hasImageRow(table, sourceHost+"/e2e/tags", tag) {
			t.Errorf("crictl images has no row %s %s:\n%s", sourceHost+"/e2e/tags", tag, table)
		}
	}
	if strings.Contains(table, env.mirror.host) {
		t.Errorf("crictl images shows the mirror's name:\n%s", table)
	}

	// CRI-O answers every failed pull with Unknown; a tag no candidate has fails with
	// NotFound through the proxy, as in front of containerd.
	if _, err := p.pull(sourceHost + "/e2e/tags:absent"); status.Code(err) != codes.NotFound {
		t.Errorf("PullImage of a tag no candidate has: %v, want NotFound", err)
	}

	// Removing by one original name removes the image and all its names, as in front of
	// containerd (the proxy removes the image by id).
	if _, stderr, err := p.crictl("rmi", refs[0]); err != nil {
		t.Fatalf("crictl rmi %s: %v %s", refs[0], err, stderr)
	}
	if rt.has(t, id) {
		t.Errorf("crictl rmi %s left image %s in CRI-O", refs[0], id)
	}
	for _, ref := range refs {
		if img := p.status(ref); img != nil {
			t.Errorf("ImageStatus(%s) after rmi = %v", ref, img)
		}
	}
}
