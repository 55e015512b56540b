// Command image builds the cri-mirror-proxy container image without a
// container engine: one layer holding the static binary, the systemd unit
// the DaemonSet installs, and a static busybox for the installer script,
// written as an image tarball (docker save format) that `ctr images import`,
// `podman load` and `crane push` take. The Containerfile at the repository's
// root describes the same image for engines that build one.
//
// The build is reproducible: every file has the same owner and time
// (SOURCE_DATE_EPOCH, or 0), so the same inputs give the same digest.
//
//	go run ./test/image -binary bin/cri-mirror-proxy -busybox /bin/busybox \
//	    -unit deploy/systemd/cri-mirror-proxy.service -tag ghcr.io/OWNER/cri-mirror-proxy:VERSION \
//	    -o bin/cri-mirror-proxy-image.tar
package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Paths inside the image; deploy/kubernetes/daemonset.yaml names them.
const (
	binaryPath  = "usr/local/bin/cri-mirror-proxy"
	unitPath    = "usr/share/cri-mirror-proxy/cri-mirror-proxy.service"
	busyboxPath = "bin/busybox"
)

// options are the command's flags.
type options struct {
	binary, busybox, unit, tag, out, arch, version string
	epoch                                          int64
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	var o options
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.StringVar(&o.binary, "binary", "bin/cri-mirror-proxy", "the static cri-mirror-proxy binary")
	fs.StringVar(&o.busybox, "busybox", "/bin/busybox", "a static busybox (Debian package busybox-static)")
	fs.StringVar(&o.unit, "unit", "deploy/systemd/cri-mirror-proxy.service", "the systemd unit the DaemonSet installs")
	fs.StringVar(&o.tag, "tag", "cri-mirror-proxy:dev", "the image's name in the tarball")
	fs.StringVar(&o.out, "o", "bin/cri-mirror-proxy-image.tar", "the image tarball to write")
	fs.StringVar(&o.arch, "arch", runtime.GOARCH, "the binaries' architecture")
	fs.StringVar(&o.version, "version", "dev", "org.opencontainers.image.version")
	epoch, _ := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64)
	fs.Int64Var(&o.epoch, "epoch", epoch, "time of every file and of the image, in seconds since 1970 (SOURCE_DATE_EPOCH)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	ref, err := name.NewTag(o.tag)
	if err != nil {
		return fmt.Errorf("-tag: %w", err)
	}
	img, err := build(o)
	if err != nil {
		return err
	}
	if err := tarball.WriteToFile(o.out, ref, img); err != nil {
		return fmt.Errorf("write %s: %w", o.out, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %s@%s\n", o.out, ref.Name(), digest)
	return nil
}

// build assembles the image.
func build(o options) (v1.Image, error) {
	applets, err := busyboxApplets(o.busybox)
	if err != nil {
		return nil, err
	}
	if err := static(o.binary); err != nil {
		return nil, fmt.Errorf("%w (build it with CGO_ENABLED=0, as make build does)", err)
	}
	mtime := time.Unix(o.epoch, 0).UTC()
	layer, err := fileLayer(mtime, func(w *layerWriter) {
		for _, d := range []string{"bin", "tmp", "usr", "usr/local", "usr/local/bin", "usr/share", "usr/share/cri-mirror-proxy"} {
			mode := int64(0o755)
			if d == "tmp" {
				mode = 0o1777 // the installer writes a temporary file
			}
			w.dir(d, mode)
		}
		w.file(busyboxPath, o.busybox, 0o755)
		for _, a := range applets {
			w.symlink("bin/"+a, "busybox")
		}
		w.file(binaryPath, o.binary, 0o755)
		w.file(unitPath, o.unit, 0o644)
	})
	if err != nil {
		return nil, err
	}
	// Docker media types: an image tarball carries no manifest, and
	// go-containerregistry (crane push) rebuilds it with these, so the
	// digest printed here is the one a registry shows after crane push.
	// (ctr images import writes a manifest of its own, with another digest.)
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", o.arch
	cf.Created = v1.Time{Time: mtime}
	cf.Config.Entrypoint = []string{"/" + binaryPath}
	cf.Config.Cmd = []string{"serve"}
	cf.Config.Env = []string{"PATH=/usr/local/bin:/bin"}
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":   "cri-mirror-proxy",
		"org.opencontainers.image.version": o.version,
	}
	return mutate.ConfigFile(img, cf)
}

// busyboxApplets asks busybox which commands it provides. The busybox must
// run here, so it has to be of this machine's architecture, and be static:
// the image has no dynamic loader or libc.
func busyboxApplets(busybox string) ([]string, error) {
	if err := static(busybox); err != nil {
		return nil, fmt.Errorf("%w (Debian package busybox-static has a static one)", err)
	}
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", busybox, err)
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" && !strings.Contains(a, "/") {
			applets = append(applets, a)
		}
	}
	if !slices.Contains(applets, "sh") {
		return nil, fmt.Errorf("%s has no sh applet", busybox)
	}
	return applets, nil
}

// static refuses an executable that needs a dynamic loader.
func static(file string) error {
	f, err := elf.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; the image has no dynamic loader", file)
		}
	}
	return nil
}

// layerWriter writes tar entries with one owner and time; the first error
// sticks.
type layerWriter struct {
	tw    *tar.Writer
	mtime time.Time
	err   error
}

func (w *layerWriter) add(h *tar.Header, body []byte) {
	if w.err != nil {
		return
	}
	h.ModTime, h.Uid, h.Gid, h.Format = w.mtime, 0, 0, tar.FormatPAX
	if w.err = w.tw.WriteHeader(h); w.err == nil && len(body) > 0 {
		_, w.err = w.tw.Write(body)
	}
}

func (w *layerWriter) dir(p string, mode int64) {
	w.add(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: mode}, nil)
}

func (w *layerWriter) symlink(p, target string) {
	w.add(&tar.Header{Typeflag: tar.TypeSymlink, Name: p, Linkname: target, Mode: 0o777}, nil)
}

func (w *layerWriter) file(p, src string, mode int64) {
	if w.err != nil {
		return
	}
	body, err := os.ReadFile(src)
	if err != nil {
		w.err = err
		return
	}
	w.add(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(body))}, body)
}

// fileLayer builds an uncompressed tar in memory (a few MiB) and turns it
// into an OCI layer, compressed on demand.
func fileLayer(mtime time.Time, fill func(*layerWriter)) (v1.Layer, error) {
	var buf bytes.Buffer
	w := &layerWriter{tw: tar.NewWriter(&buf), mtime: mtime}
	fill(w)
	if err := errors.Join(w.err, w.tw.Close()); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
}
