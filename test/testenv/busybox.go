package testenv

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// BusyboxPath is where Debian's busybox-static (installed by test/tools.sh) puts its binary.
const BusyboxPath = "/bin/busybox"

// BusyboxLayer is the root file system of a minimal runnable linux image: the static busybox
// at path as /bin/busybox, a hard link to it in /bin for every applet it has (sh, sleep, echo,
// cat, ls, top, ...; hard links as in the busybox images, so that masking one applet's path
// leaves the others runnable), /etc/passwd and /etc/group with root, www-data and nobody, and the directories a
// runtime mounts over or a program writes to (/tmp world-writable). It is what critest's
// container specs run in place of registry.k8s.io/e2e-test-images/busybox, whose own
// content cannot be had offline. A dynamically linked busybox is refused: nothing in the
// image could load it.
func BusyboxLayer(path string) (v1.Layer, error) {
	bin, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("%s is dynamically linked; a static busybox is needed (Debian package busybox-static)", path)
		}
	}
	out, err := exec.Command(path, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", path, err)
	}
	applets := strings.Fields(string(out))
	if len(applets) == 0 {
		return nil, fmt.Errorf("%s --list: no applets", path)
	}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// A fixed time: the same busybox gives the same layer, so the same image id.
	mtime := time.Unix(0, 0)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Name: name + "/", Mode: mode, Typeflag: tar.TypeDir, ModTime: mtime})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), Typeflag: tar.TypeReg, ModTime: mtime}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	var errs []error
	for _, d := range []string{"bin", "dev", "etc", "home", "proc", "root", "sys", "usr", "var"} {
		errs = append(errs, dir(d, 0o755))
	}
	errs = append(errs, dir("tmp", 0o1777))
	errs = append(errs, file("bin/busybox", 0o755, bin))
	for _, a := range applets {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		errs = append(errs, tw.WriteHeader(&tar.Header{Name: "bin/" + a, Linkname: "bin/busybox", Mode: 0o755, Typeflag: tar.TypeLink, ModTime: mtime}))
	}
	errs = append(errs,
		file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\n")),
		file("etc/group", 0o644, []byte("root:x:0:\nwww-data:x:33:\nusers:x:100:\nnogroup:x:65534:\n")),
		tw.Close())
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("busybox layer: %w", err)
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}

// Busybox is a runnable linux/arch image of BusyboxLayer(path) whose command is cmd (its
// config's Cmd, as the real busybox image runs "sh"), with edits applied to the config.
func Busybox(path, arch string, cmd []string, edits ...func(*v1.Config)) (v1.Image, error) {
	layer, err := BusyboxLayer(path)
	if err != nil {
		return nil, err
	}
	return OfLayers(arch, []v1.Layer{layer}, append([]func(*v1.Config){func(c *v1.Config) {
		c.Cmd = cmd
		c.Env = append(c.Env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}}, edits...)...)
}
