//go:build e2e

package e2e

import (
	"bufio"
	"context"
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

// crio is a CRI-O started for one test, with its own configuration, storage and socket
// (testenv.WriteCRIO) and no mirrors of its own: the proxy in front decides.
type crio struct {
	sock string
	proc *process
	conn *grpc.ClientConn
	img  runtimeapi.ImageServiceClient
}

// startCRIO starts a CRI-O built by test/tools.sh; the test's cleanup stops it and unmounts
// what it left mounted.
func startCRIO(t *testing.T) *crio {
	t.Helper()
	bin := filepath.Join(env.root, "test", ".bin")
	for _, tool := range []string{"crio", "pinns"} {
		if _, err := os.Stat(filepath.Join(bin, tool)); err != nil {
			t.Fatalf("%s not found in test/.bin: run `bash test/tools.sh` (or `make tools`)", tool)
		}
	}
	dir, err := os.MkdirTemp(env.dir, "crio")
	if err != nil {
		t.Fatal(err)
	}
	hosts := map[string]string{
		env.mirror.host: env.mirror.host,
		env.source.host: env.source.host,
		sourceHost:      env.source.host,
	}
	layout, err := testenv.WriteCRIO(dir, filepath.Join(bin, "pinns"), hosts, fmt.Sprintf("127.0.0.1:%d", env.closedPort))
	if err != nil {
		t.Fatal(err)
	}
	p, err := startProcess("crio", filepath.Join(dir, "crio.log"), append([]string{filepath.Join(bin, "crio")}, layout.Args()...)...)
	if err != nil {
		t.Fatal(err)
	}
	c := &crio{sock: layout.Socket, proc: p}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("----- crio log (last 40 lines) -----\n%s", logTail(p.logPath, 40))
		}
		p.stop(15 * time.Second)
		unmountUnder(t, dir)
	})
	conn, err := dialCRI(c.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c.conn, c.img = conn, runtimeapi.NewImageServiceClient(conn)
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
		t.Fatal(err)
	}
	return c
}

// has reports whether CRI-O itself has the image id.
func (c *crio) has(t *testing.T, id string) bool {
	t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	resp, err := c.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: id}})
	if err != nil {
		t.Fatalf("ImageStatus(%s) on CRI-O: %v", id, err)
	}
	return resp.GetImage() != nil
}

// unmountUnder unmounts what is still mounted below dir, deepest first (CRI-O's overlay
// driver mounts its home and unmounts it when stopped; a killed CRI-O leaves it).
func unmountUnder(t *testing.T, dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Errorf("unmount under %s: %v", dir, err)
		return
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
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := syscall.Unmount(mounts[i], syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mounts[i], err)
		}
	}
}

// TestCRIONames: in front of CRI-O, which answers PullImage with a digest reference in the
// repository it pulled and reports bare-hex ids, an image pulled from a mirror shows under its
// original names in ImageStatus, ListImages and crictl, PullImage answers with its id, and
// crictl rmi by an original name removes it from CRI-O.
func TestCRIONames(t *testing.T) {
	c := startCRIO(t)
	// The proxy watches a mirror pull's progress through containerd's content service; CRI-O
	// has none, and the proxy counts on the answer being Unimplemented to leave it alone.
	ctx, cancel := callCtx()
	defer cancel()
	if _, err := contentapi.NewContentClient(c.conn).ListStatuses(ctx, &contentapi.ListStatusesRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("CRI-O's answer to containerd's content ListStatuses = %v, want Unimplemented", err)
	}
	p := startProxyWith(t, registriesConf(sourceRule("m1")), proxyOpts{runtimeSock: c.sock})
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
	if c.has(t, id) {
		t.Errorf("crictl rmi %s left image %s in CRI-O", refs[0], id)
	}
	for _, ref := range refs {
		if img := p.status(ref); img != nil {
			t.Errorf("ImageStatus(%s) after rmi = %v", ref, img)
		}
	}
}
