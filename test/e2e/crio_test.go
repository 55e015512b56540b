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

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/testenv"
)

// crio is a CRI-O with its own configuration, storage and socket under dir
// (testenv.WriteCRIO) and no mirrors of its own: the proxy in front decides.
type crio struct {
	dir    string
	sock   string
	proc   *process
	conn   *grpc.ClientConn
	img    runtimeapi.ImageServiceClient
	layout testenv.CRIO
	hosts  map[string]string // the registries it reaches, as in its registries.conf
	closed string            // where the public registries lead
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
	closed := fmt.Sprintf("127.0.0.1:%d", h.closedPort)
	layout, err := testenv.WriteCRIO(dir, pinns, hosts, closed)
	if err != nil {
		return nil, err
	}
	p, err := startProcess("crio", filepath.Join(dir, "crio.log"), append([]string{crioBin}, layout.Args()...)...)
	if err != nil {
		return nil, err
	}
	c := &crio{dir: dir, sock: layout.Socket, proc: p, layout: layout, hosts: hosts, closed: closed}
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

// reach makes CRI-O reach the registry host at addr (host:port, plain HTTP) until the test
// ends: an entry in its registries.conf, which CRI-O reads again on SIGHUP.
func (c *crio) reach(t *testing.T, host, addr string) {
	t.Helper()
	c.setHost(t, host, addr)
	t.Cleanup(func() { c.setHost(t, host, "") })
}

// setHost writes CRI-O's registries.conf with host at addr ("": without host) and waits
// until CRI-O has applied it.
func (c *crio) setHost(t *testing.T, host, addr string) {
	t.Helper()
	if addr == "" {
		delete(c.hosts, host)
	} else {
		c.hosts[host] = addr
	}
	if err := c.layout.WriteRegistries(c.hosts, c.closed); err != nil {
		t.Fatal(err)
	}
	const applied = "Applied new registry configuration"
	before := strings.Count(readFile(c.proc.logPath), applied)
	if err := c.proc.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP to CRI-O: %v", err)
	}
	err := waitFor(10*time.Second, "CRI-O to apply its registries.conf", func() error {
		if strings.Count(readFile(c.proc.logPath), applied) <= before {
			return errors.New("not applied yet")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, logTail(c.proc.logPath, 20))
	}
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

// TestCRIOSmoke checks the shared CRI-O itself, without the proxy, and the differences from
// containerd the runtime matrix (criRuntime) relies on: it pulls from the mirror registry and,
// as source.test, from the source registry, answers PullImage with a digest reference in the
// repository pulled and reports bare-hex ids, cannot reach the public registries, and answers
// containerd's content service, which the proxy reads to watch a pull's progress, with
// Unimplemented (so the proxy leaves it alone).
func TestCRIOSmoke(t *testing.T) {
	rt := env.runtimes[1]
	if rt.unavailable != nil {
		t.Fatalf("no CRI-O: %v", rt.unavailable)
	}
	rt.cleanImages(t)
	ctx, cancel := callCtx()
	defer cancel()
	for _, tc := range []struct {
		ref  string
		want pushedImage
	}{
		{env.mirror.host + "/m1/e2e/smoke:v1", env.image("M:m1/e2e/smoke:v1")},
		{sourceHost + "/e2e/smoke:v1", env.image("S:e2e/smoke:v1")},
	} {
		resp, err := rt.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: tc.ref}})
		if err != nil {
			t.Fatalf("CRI-O PullImage(%s): %v", tc.ref, err)
		}
		if want := rt.sourceAnswer(tc.ref, tc.want); resp.GetImageRef() != want {
			t.Errorf("CRI-O PullImage(%s) = %s, want %s", tc.ref, resp.GetImageRef(), want)
		}
		st, err := rt.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: tc.ref}})
		if err != nil || st.GetImage() == nil {
			t.Fatalf("CRI-O ImageStatus(%s) = %v, %v", tc.ref, st.GetImage(), err)
		}
		if st.GetImage().GetId() != rt.id(tc.want) {
			t.Errorf("CRI-O ImageStatus(%s): id %s, want %s", tc.ref, st.GetImage().GetId(), rt.id(tc.want))
		}
		// CRI-O names an image after the reference it pulled: this is what the proxy hides.
		if tags := st.GetImage().GetRepoTags(); len(tags) != 1 || tags[0] != tc.ref {
			t.Errorf("CRI-O repo_tags = %q, want [%s]", tags, tc.ref)
		}
	}

	_, err := rt.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "docker.io/library/busybox:latest"}})
	if err == nil {
		t.Fatal("pulling docker.io/library/busybox:latest succeeded; public registries must be unreachable in this environment")
	}
	if !strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("public pull error %q does not mention the loopback port it was pointed at", err)
	}

	if _, err := contentapi.NewContentClient(env.crio.conn).ListStatuses(ctx, &contentapi.ListStatusesRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("CRI-O's answer to containerd's content ListStatuses = %v, want Unimplemented", err)
	}
}
