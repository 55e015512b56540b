// Command envtool is the shell scripts' way into test/testenv and test/promtest: the same
// containerd and registry configuration, the same synthetic images and the same metrics
// parser as the e2e tests and the benchmark, so that test/lib.sh stays a thin layer of
// process management. test/lib.sh builds it (make testbin) and calls it as $CMP_ENVTOOL.
//
//	envtool registry DIR ADDR LEVEL            write DIR/config.yml; print its path
//	envtool containerd DIR CLOSED [-sandbox-image=REF] [-cni=CONFDIR] [-cgroups] [HOST=URL...]
//	                                           write DIR/config.toml and certs.d; print the socket
//	envtool cni DIR BRIDGE SUBNET              write a pod network on bridge BRIDGE into DIR
//	envtool crio DIR PINNS CLOSED [HOST=ADDR...] write DIR/crio.conf and registries.conf; print crio's arguments
//	envtool host DIR HOST URL [PATH FALLBACK]  containerd under DIR reaches HOST at URL (or URL+PATH)
//	envtool push REF CONTENT [USER]            push a one-layer image holding CONTENT
//	envtool push-critest MIRROR                push the images critest's image tests name
//	envtool push-critest-runtime MIRROR SANDBOX push the runnable images critest's runtime specs
//	                                           name, and a pause image as SANDBOX
//	envtool metric ADDR NAME [L=V|L!=V...]     print the sum of a metric on http://ADDR/metrics
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/promtest"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/testenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Every command is bounded: a registry that stops answering fails the script.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "envtool:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: envtool registry|containerd|cni|crio|host|push|push-critest|push-critest-runtime|metric ARGS (see the package doc)")
	}
	cmd, args := args[0], args[1:]
	need := func(min, max int) error {
		if len(args) < min || (max >= 0 && len(args) > max) {
			return fmt.Errorf("%s: wrong number of arguments (%d)", cmd, len(args))
		}
		return nil
	}
	switch cmd {
	case "registry":
		if err := need(3, 3); err != nil {
			return err
		}
		path, err := testenv.WriteRegistry(args[0], args[1], args[2])
		if err != nil {
			return err
		}
		fmt.Println(path)
	case "containerd":
		if err := need(2, -1); err != nil {
			return err
		}
		hosts := map[string]string{}
		var o testenv.CRIOptions
		for _, kv := range args[2:] {
			switch opt, val, _ := strings.Cut(kv, "="); opt {
			case "-sandbox-image":
				o.SandboxImage = val
				continue
			case "-cni":
				o.CNIConfDir, o.CNIBinDir = val, testenv.CNIPluginDir
				continue
			case "-cgroups":
				o.Cgroups = true
				continue
			}
			if strings.HasPrefix(kv, "-") {
				return fmt.Errorf("containerd: unknown option %q", kv)
			}
			host, url, ok := strings.Cut(kv, "=")
			if !ok {
				return fmt.Errorf("containerd: %q is not HOST=URL", kv)
			}
			hosts[host] = url
		}
		c, err := testenv.WriteContainerdCRI(args[0], hosts, args[1], o)
		if err != nil {
			return err
		}
		fmt.Println(c.Socket)
	case "crio":
		if err := need(3, -1); err != nil {
			return err
		}
		hosts := map[string]string{}
		for _, kv := range args[3:] {
			host, addr, ok := strings.Cut(kv, "=")
			if !ok {
				return fmt.Errorf("crio: %q is not HOST=ADDR", kv)
			}
			hosts[host] = addr
		}
		c, err := testenv.WriteCRIO(args[0], args[1], hosts, args[2])
		if err != nil {
			return err
		}
		fmt.Println(strings.Join(c.Args(), "\n"))
	case "host":
		if len(args) != 3 && len(args) != 5 {
			return fmt.Errorf("host: wrong number of arguments (%d)", len(args))
		}
		certs := testenv.ContainerdAt(args[0]).Certs
		if len(args) == 5 {
			return testenv.WriteMirrorHost(certs, args[1], args[2], args[3], args[4])
		}
		return testenv.WriteHost(certs, args[1], args[2])
	case "push":
		if err := need(2, 3); err != nil {
			return err
		}
		var edits []func(*v1.Config)
		if len(args) == 3 && args[2] != "" {
			edits = append(edits, testenv.User(args[2]))
		}
		img, err := testenv.WithContent(args[1], testenv.Arch, edits...)
		if err != nil {
			return err
		}
		return testenv.Push(ctx, map[string]remote.Taggable{args[0]: img}, 1)
	case "push-critest":
		if err := need(1, 1); err != nil {
			return err
		}
		return pushCritest(ctx, args[0])
	case "push-critest-runtime":
		if err := need(2, 2); err != nil {
			return err
		}
		return pushCritestRuntime(ctx, args[0], args[1])
	case "cni":
		if err := need(3, 3); err != nil {
			return err
		}
		return testenv.WriteCNI(args[0], args[1], args[2])
	case "metric":
		if err := need(2, -1); err != nil {
			return err
		}
		keep, err := selector(args[2:])
		if err != nil {
			return err
		}
		set, err := promtest.Scrape(ctx, args[0])
		if err != nil {
			return err
		}
		fmt.Println(set.SumFunc(args[1], keep))
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
	return nil
}

// selector turns label=value and label!=value arguments into a filter.
func selector(args []string) (func(map[string]string) bool, error) {
	type cond struct {
		label, value string
		equal        bool
	}
	var conds []cond
	for _, a := range args {
		if l, v, ok := strings.Cut(a, "!="); ok {
			conds = append(conds, cond{l, v, false})
		} else if l, v, ok := strings.Cut(a, "="); ok {
			conds = append(conds, cond{l, v, true})
		} else {
			return nil, fmt.Errorf("metric: %q is neither LABEL=VALUE nor LABEL!=VALUE", a)
		}
	}
	return func(labels map[string]string) bool {
		for _, c := range conds {
			if (labels[c.label] == c.value) != c.equal {
				return false
			}
		}
		return true
	}, nil
}

// pushCritest pushes the images critest's image tests name under MIRROR/<source host>/<path>,
// e.g. gcr.io/k8s-staging-cri-tools/test-image-tag:test →
// MIRROR/gcr.io/k8s-staging-cri-tools/test-image-tag:test. The digest-pinned image is not
// pushed: its content (and so its digest) cannot be recreated offline.
func pushCritest(ctx context.Context, mirror string) error {
	g := mirror + "/gcr.io/k8s-staging-cri-tools/"
	images := map[string]remote.Taggable{}
	add := func(content string, edits []func(*v1.Config), refs ...string) error {
		img, err := testenv.WithContent(content, testenv.Arch, edits...)
		if err != nil {
			return err
		}
		for _, r := range refs {
			images[r] = img
		}
		return nil
	}
	user := func(u string) []func(*v1.Config) { return []func(*v1.Config){testenv.User(u)} }
	for _, s := range []struct {
		content string
		edits   []func(*v1.Config)
		refs    []string
	}{
		{"latest", nil, []string{g + "test-image-latest:latest"}},
		{"tag-test", nil, []string{g + "test-image-tag:test"}},
		{"tag-all", nil, []string{g + "test-image-tag:all"}},
		{"image-1", nil, []string{g + "test-image-1:latest"}},
		{"image-2", nil, []string{g + "test-image-2:latest"}},
		{"image-3", nil, []string{g + "test-image-3:latest"}},
		// One image under three tags.
		{"tags", nil, []string{g + "test-image-tags:1", g + "test-image-tags:2", g + "test-image-tags:3"}},
		{"uid", user("1002"), []string{g + "test-image-user-uid:latest"}},
		{"username", user("www-data"), []string{g + "test-image-user-username:latest"}},
		{"uid-group", user("1003:users"), []string{g + "test-image-user-uid-group:latest"}},
		{"username-group", user("www-data:users"), []string{g + "test-image-user-username-group:latest"}},
		// The same image (same digest) in two registries: critest removes it by one name and
		// expects both names gone.
		{"pause", nil, []string{mirror + "/registry.k8s.io/pause:3.9", mirror + "/k8s.gcr.io/pause:3.9"}},
	} {
		if err := add(s.content, s.edits, s.refs...); err != nil {
			return err
		}
	}
	return testenv.Push(ctx, images, 4)
}

// pushCritestRuntime pushes the images critest's container, sandbox and streaming specs run,
// under MIRROR/<source host>/<path> as pushCritest does, and the pod sandbox (pause) image as
// sandbox, a reference the runtime pulls by itself (containerd's sandbox_image). All are
// runnable, built on Debian's static busybox with its applets (testenv.Busybox), each with a
// config of its own (so an image id of its own):
//   - registry.k8s.io/e2e-test-images/busybox:1.29-2, the image of most specs, runs sh;
//   - test-image-tag:test and pause:3.9 (one image, two registries), which "Image Identifier
//     Consistency" runs with their default command: in the image suite they only hold a file;
//   - the sandbox image runs busybox sleep: containerd stops a sandbox with SIGKILL, so it
//     needs no signal handling.
func pushCritestRuntime(ctx context.Context, mirror, sandbox string) error {
	label := func(v string) func(*v1.Config) {
		return func(c *v1.Config) { c.Labels = map[string]string{"critest.image": v} }
	}
	sleep := []string{"sleep", "2147483647"}
	var errs []error
	image := func(cmd []string, edits ...func(*v1.Config)) v1.Image {
		img, err := testenv.Busybox(testenv.BusyboxPath, testenv.Arch, cmd, edits...)
		errs = append(errs, err)
		return img
	}
	busybox := image([]string{"sh"}, label("busybox"))
	tagged := image(sleep, label("test-image-tag"))
	pause39 := image(nil, label("pause"), func(c *v1.Config) { c.Entrypoint = sleep })
	pause := image(nil, label("sandbox"), func(c *v1.Config) { c.Entrypoint = sleep })
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return testenv.Push(ctx, map[string]remote.Taggable{
		// framework.DefaultLinuxContainerImage of critest v1.37.0.
		mirror + "/registry.k8s.io/e2e-test-images/busybox:1.29-2":   busybox,
		mirror + "/gcr.io/k8s-staging-cri-tools/test-image-tag:test": tagged,
		mirror + "/registry.k8s.io/pause:3.9":                        pause39,
		mirror + "/k8s.gcr.io/pause:3.9":                             pause39,
		sandbox:                                                      pause,
	}, 4)
}
