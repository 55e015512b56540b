//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestImageRunsInContainerd builds the container image as `make image` does
// (test/image, no container engine), imports it into the test containerd and
// runs it there with runc, as a node runs the DaemonSet's and the
// MachineConfig's containers: the binary answers version, and the busybox
// shell the installer script needs works, with a writable /tmp.
func TestImageRunsInContainerd(t *testing.T) {
	if env.proxyErr != nil {
		t.Fatalf("no proxy binary: %v", env.proxyErr)
	}
	ctr, err := exec.LookPath("ctr")
	if err != nil {
		t.Fatalf("ctr (Debian package containerd) not found: %v", err)
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Fatalf("/bin/busybox (Debian package busybox-static, installed by test/tools.sh): %v", err)
	}
	const ref = "ghcr.io/example/cri-mirror-proxy:e2e"
	tar := filepath.Join(env.dir, "image.tar")
	if _, stderr, err := run(5*time.Minute, env.root, nil, "go", "run", "./test/image",
		"-binary", env.proxyBin, "-busybox", "/bin/busybox", "-unit", "deploy/systemd/cri-mirror-proxy.service",
		"-tag", ref, "-o", tar); err != nil {
		t.Fatalf("building the image: %v\n%s", err, stderr)
	}

	// A namespace of its own: the CRI tests own k8s.io.
	ctrArgs := func(args ...string) []string {
		return append([]string{ctr, "--address", env.ctd.sock, "--namespace", "cmp-image"}, args...)
	}
	t.Cleanup(func() {
		for _, args := range [][]string{{"containers", "rm", "cmp-version", "cmp-shell"}, {"images", "rm", ref}, {"namespaces", "rm", "cmp-image"}} {
			run(time.Minute, "", nil, ctrArgs(args...)...)
		}
	})
	if _, stderr, err := run(2*time.Minute, "", nil, ctrArgs("images", "import", tar)...); err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, stderr)
	}

	want, _, err := run(time.Minute, "", nil, env.proxyBin, "version")
	if err != nil {
		t.Fatal(err)
	}
	out, stderr, err := run(2*time.Minute, "", nil, ctrArgs("run", "--rm", ref, "cmp-version", "/usr/local/bin/cri-mirror-proxy", "version")...)
	if err != nil || out != want {
		t.Errorf("version in the container: %q, %v (stderr %s); want %q", out, err, stderr, want)
	}
	out, stderr, err = run(2*time.Minute, "", nil, ctrArgs("run", "--rm", ref, "cmp-shell",
		"/bin/sh", "-c", `f=$(mktemp) && cp /usr/share/cri-mirror-proxy/cri-mirror-proxy.service "$f" && cmp -s "$f" /usr/share/cri-mirror-proxy/cri-mirror-proxy.service && command -v nsenter && echo ok`)...)
	if err != nil || !strings.HasSuffix(out, "ok\n") {
		t.Errorf("the installer's shell in the container: %q, %v (stderr %s)", out, err, stderr)
	}
}
