package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The commands deploy/kubernetes/daemonset.yaml's install.sh runs inside
// the image.
var installerCommands = []string{"sh", "cat", "cmp", "cp", "mv", "chmod", "mkdir", "mktemp", "rm", "rmdir",
	"dirname", "basename", "sleep", "nsenter", "wget", "tr", "sed", "grep", "head"}

// TestImage builds the image from a freshly built binary, unpacks its layers
// into a directory and runs what the DaemonSet and the MachineConfig run in
// it: the entrypoint with "version", and busybox's applets for the
// installer script.
func TestImage(t *testing.T) {
	busybox := "/bin/busybox"
	if _, err := os.Stat(busybox); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s: %v (Debian package busybox-static, installed by test/tools.sh)", busybox, err)
		}
		t.Skipf("no %s (Debian package busybox-static)", busybox)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "cri-mirror-proxy")
	// The Makefile's recipe (build tags, static, version stamp), as make image uses it.
	build := exec.Command("make", "-C", "../..", "--no-print-directory", "build", "BIN="+bin, "VERSION=image-test")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}

	out := filepath.Join(dir, "image.tar")
	args := []string{"-binary", bin, "-busybox", busybox, "-unit", "../../deploy/systemd/cri-mirror-proxy.service",
		"-tag", "ghcr.io/owner/cri-mirror-proxy:image-test", "-version", "image-test", "-o", out}
	var printed bytes.Buffer
	if err := run(args, &printed); err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if want := "ghcr.io/owner/cri-mirror-proxy:image-test@" + digest.String(); !strings.Contains(printed.String(), want) {
		t.Errorf("printed %q, want it to name %s", printed.String(), want)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/usr/local/bin/cri-mirror-proxy"}) {
		t.Errorf("entrypoint %q: the MachineConfig runs the image with serve and its flags", cf.Config.Entrypoint)
	}

	// Same inputs, same image.
	if err := run(append(args[:len(args)-1:len(args)-1], filepath.Join(dir, "again.tar")), io.Discard); err != nil {
		t.Fatal(err)
	}
	again, err := tarball.ImageFromPath(filepath.Join(dir, "again.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := again.Digest(); d != digest {
		t.Errorf("a second build has digest %s, the first %s", d, digest)
	}

	root := filepath.Join(dir, "rootfs")
	unpack(t, mutate.Extract(img), root)

	// The entrypoint runs, and is the binary built above.
	entry := exec.Command(filepath.Join(root, cf.Config.Entrypoint[0]), "version")
	if got, err := entry.CombinedOutput(); err != nil || !strings.Contains(string(got), "image-test") {
		t.Errorf("%s version: %v\n%s", cf.Config.Entrypoint[0], err, got)
	}
	unit, _ := os.ReadFile("../../deploy/systemd/cri-mirror-proxy.service")
	if got, err := os.ReadFile(filepath.Join(root, "usr/share/cri-mirror-proxy/cri-mirror-proxy.service")); err != nil || !bytes.Equal(got, unit) {
		t.Errorf("the image's unit differs from deploy/systemd/cri-mirror-proxy.service (%v)", err)
	}
	if fi, err := os.Stat(filepath.Join(root, "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("/tmp: %v %v, want a sticky world-writable directory", fi, err)
	}

	// The installer's commands are applets of the image's busybox, each
	// with its link in /bin. (Debian's static busybox runs its applets from
	// sh even without the links; a program exec'ing one needs them.)
	list, err := exec.Command(filepath.Join(root, "bin/busybox"), "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	applets := strings.Fields(string(list))
	for _, c := range installerCommands {
		if !slices.Contains(applets, c) {
			t.Errorf("the image's busybox has no %s", c)
		}
		if target, err := os.Readlink(filepath.Join(root, "bin", c)); err != nil || target != "busybox" {
			t.Errorf("/bin/%s: %q %v, want a link to busybox", c, target, err)
		}
	}
	sh := exec.Command(filepath.Join(root, "bin/sh"), "-c", "echo ok")
	sh.Env = []string{"PATH=" + filepath.Join(root, "bin")}
	if got, err := sh.CombinedOutput(); err != nil || string(got) != "ok\n" {
		t.Errorf("the image's shell: %v\n%s", err, got)
	}
}

// unpack writes a flattened image file system into dir.
func unpack(t *testing.T, rc io.ReadCloser, dir string) {
	t.Helper()
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Fatalf("layer entry %q leaves the root", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
			if err == nil {
				// Chmod: MkdirAll's mode is masked by the umask and drops the sticky bit.
				err = os.Chmod(p, os.FileMode(h.Mode).Perm()|modeBits(h.Mode))
			}
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		case tar.TypeReg:
			var body []byte
			if body, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, body, os.FileMode(h.Mode).Perm())
			}
		default:
			t.Fatalf("layer entry %q: unexpected type %c", h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// modeBits maps the tar header's sticky bit to Go's.
func modeBits(mode int64) os.FileMode {
	if mode&0o1000 != 0 {
		return os.ModeSticky
	}
	return 0
}
