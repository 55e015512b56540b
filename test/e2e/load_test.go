//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestLoad (issue 4 item 12): 1,000 concurrent ImageStatus calls and 100 concurrent pulls of
// 10 distinct tags through the proxy against the real containerd: no errors, each tag pulled
// from the mirror once per burst, and the proxy's goroutines back near their baseline after.
func TestLoad(t *testing.T) {
	cleanImages(t)
	statuses, pulls, tags, bursts := 1000, 100, 10, 1
	if soak {
		statuses, pulls, tags, bursts = 10000, 1000, 50, 3
	}
	// Blobs come through a front that delays them a little, so every pull of a tag arrives
	// while the first one is still running: once per burst is then a property of the proxy
	// (one runtime pull per distinct reference), not of timing.
	front := newRegistryFront(t, env.mirror.host)
	front.delayFor = func(r *http.Request) time.Duration {
		if isBlob(r) && r.Method == http.MethodGet {
			return time.Second
		}
		return 0
	}
	allowHost(t, env.ctd, front.host, "http://"+front.host)
	p := startProxy(t, registriesConf(rule{prefix: sourceHost + "/e2e/load", mirrors: []mirror{{location: front.host + "/m1/e2e/load"}}}))

	// Clients like several kubelets' worth of connections.
	const nconns = 4
	conns := make([]*grpc.ClientConn, nconns)
	for i := range conns {
		c, err := dialCRI(p.sock)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	closeConns := func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}
	defer closeConns()
	// Warm up every connection, then take the baseline.
	for _, c := range conns {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := runtimeapi.NewImageServiceClient(c).ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{}); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	const goroutines = "go_goroutines"
	baseline := p.metrics().Sum(goroutines, nil)

	for burst := range bursts {
		imgs := pushMany(t, tags, func(i int) string { return fmt.Sprintf("%s/m1/e2e/load:b%d-%d", env.mirror.host, burst, i) })
		original := func(i int) string { return fmt.Sprintf("%s/e2e/load:b%d-%d", sourceHost, burst, i) }
		before := p.metrics()
		manifestHeadsBefore := runtimeManifestHeads(front)

		var errCount atomic.Int32
		var firstErrs sync.Map
		fail := func(what string, err error) {
			if errCount.Add(1) <= 5 {
				firstErrs.Store(what, grpcMessage(err))
			}
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range pulls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				img := runtimeapi.NewImageServiceClient(conns[i%nconns])
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				tag := i % tags
				resp, err := img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: original(tag)}})
				switch {
				case err != nil:
					fail(fmt.Sprintf("PullImage %d", i), err)
				case resp.GetImageRef() != imgs[tag].ID:
					fail(fmt.Sprintf("PullImage %d", i), fmt.Errorf("image %s, want %s", resp.GetImageRef(), imgs[tag].ID))
				}
			}()
		}
		for i := range statuses {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				img := runtimeapi.NewImageServiceClient(conns[i%nconns])
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				// Original names (some being pulled right now), ids-to-be and unknown names.
				var ref string
				switch i % 3 {
				case 0:
					ref = original(i % tags)
				case 1:
					ref = imgs[i%tags].ID
				default:
					ref = fmt.Sprintf("%s/e2e/load-unknown:%d", sourceHost, i)
				}
				if _, err := img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
					fail(fmt.Sprintf("ImageStatus %d", i), err)
				}
			}()
		}
		close(start)
		if !waitGroupWithin(&wg, 3*time.Minute) {
			t.Fatalf("burst %d: calls still running after 3 minutes", burst)
		}
		if n := errCount.Load(); n != 0 {
			var first []string
			firstErrs.Range(func(k, v any) bool { first = append(first, fmt.Sprintf("%s: %s", k, v)); return true })
			t.Fatalf("burst %d: %d of %d calls failed; first: %s", burst, n, statuses+pulls, strings.Join(first, "; "))
		}

		after := p.metrics()
		const attempts = "cri_mirror_pull_attempts_total"
		if d := after.Sum(attempts, nil) - before.Sum(attempts, nil); d != float64(tags) {
			t.Errorf("burst %d: %s grew by %v for %d pulls of %d tags, want %d (one runtime pull per tag)\n%s", burst, attempts, d, pulls, tags, tags, after.Dump("cri_mirror_pull"))
		}
		if d := after.Sum("cri_mirror_pulls_total", map[string]string{"result": "success"}) - before.Sum("cri_mirror_pulls_total", map[string]string{"result": "success"}); d != float64(pulls) {
			t.Errorf("burst %d: cri_mirror_pulls_total{result=success} grew by %v, want %d (once per call)", burst, d, pulls)
		}
		if d := runtimeManifestHeads(front) - manifestHeadsBefore; d != tags {
			t.Errorf("burst %d: containerd resolved a tag at the mirror %d times for %d tags, want once each\n%s", burst, d, tags, front.dump(40))
		}
		for i := range tags {
			if img := p.status(original(i)); img.GetId() != imgs[i].ID {
				t.Errorf("burst %d: ImageStatus(%s) = %v, want %s", burst, original(i), img, imgs[i].ID)
			}
		}
	}

	// The extra connections go; the proxy's goroutines come back near the baseline.
	closeConns()
	conns = make([]*grpc.ClientConn, nconns)
	const slack = 10
	var now float64
	err := waitFor(20*time.Second, "go_goroutines back near the baseline", func() error {
		now = p.metrics().Sum(goroutines, nil)
		if now > baseline+slack {
			return fmt.Errorf("%v goroutines, baseline %v", now, baseline)
		}
		return nil
	})
	if err != nil {
		body, _ := p.get("/debug/pprof/goroutine?debug=1")
		t.Errorf("%v (a leak?)\n----- goroutines -----\n%s", err, firstLines(body, 80))
	}
	t.Logf("goroutines: baseline %v, after the load %v", baseline, now)
}

// runtimeManifestHeads counts containerd's tag resolutions (HEAD of a manifest by tag) at the
// front, leaving out the proxy's probe.
func runtimeManifestHeads(f *registryFront) int {
	return f.count(func(r frontRequest) bool {
		m := manifestPath.FindStringSubmatch(r.Path)
		return m != nil && r.Method == http.MethodHead && fromRuntime(r.UserAgent) && !strings.HasPrefix(m[2], "sha256:")
	})
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

// TestBadInput (items 7): what the real binary does with requests a unit test's in-process
// server cannot show: a message over the gRPC size limit, and bad requests on the real socket.
// Each is refused with the right code and the proxy keeps serving.
func TestBadInput(t *testing.T) {
	cleanImages(t)
	own := mustPushRandom(t, env.mirror.host+"/m1/e2e/bad-input:v1")
	p := startProxy(t, registriesConf(sourceRule("m1")))
	// A client that would send anything: the limit must be enforced by the server.
	conn, err := grpc.NewClient("unix://"+p.sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20), grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	img := runtimeapi.NewImageServiceClient(conn)
	rt := runtimeapi.NewRuntimeServiceClient(conn)

	call := func(name string, wantCode codes.Code, f func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		err := f(ctx)
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s took %s", name, d)
		}
		if status.Code(err) != wantCode {
			t.Errorf("%s: %v; want code %s", name, err, wantCode)
			return
		}
		if err != nil && strings.TrimSpace(status.Convert(err).Message()) == "" {
			t.Errorf("%s: %s without a message", name, wantCode)
		}
		t.Logf("%s: %s", name, grpcMessage(err))
	}
	big := strings.Repeat("a", 20<<20)
	call("ImageStatus with a 20 MiB image name", codes.ResourceExhausted, func(ctx context.Context) error {
		_, err := img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: big}})
		return err
	})
	call("PullImage with a 20 MiB image name", codes.ResourceExhausted, func(ctx context.Context) error {
		_, err := img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: big}})
		return err
	})
	call("RuntimeService.Version (relayed) with a 20 MiB version", codes.ResourceExhausted, func(ctx context.Context) error {
		_, err := rt.Version(ctx, &runtimeapi.VersionRequest{Version: big})
		return err
	})
	call("PullImage with a 1 MiB image name", codes.InvalidArgument, func(ctx context.Context) error {
		_, err := img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: big[:1<<20]}})
		return err
	})
	call("PullImage without an image spec", codes.InvalidArgument, func(ctx context.Context) error {
		_, err := img.PullImage(ctx, &runtimeapi.PullImageRequest{})
		return err
	})
	call("PullImage with an invalid reference", codes.InvalidArgument, func(ctx context.Context) error {
		_, err := img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "Source.Test/UPPER/..:v1"}})
		return err
	})
	call("ImageStatus without an image spec", codes.InvalidArgument, func(ctx context.Context) error {
		_, err := img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{})
		return err
	})
	call("RemoveImage without an image spec", codes.InvalidArgument, func(ctx context.Context) error {
		_, err := img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{})
		return err
	})

	// Still serving, on the same connection and on a new one, and still the same process.
	if !p.proc.running() {
		t.Fatalf("the proxy exited: %s", p.proc.exitState())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := img.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{}); err != nil {
		t.Errorf("ImageFsInfo on the same connection after the bad requests: %v", err)
	}
	p.mustPull(sourceHost+"/e2e/bad-input:v1", own)
	if log := readFile(p.logPath()); strings.Contains(log, "panic") {
		t.Errorf("the proxy log mentions a panic:\n%s", logTail(p.logPath(), 40))
	}
}

// TestConfigErrors (item 8): the real binary on bad files. check-config exits non-zero and
// names the file (and, for a drop-in, the drop-in) and the problem; serve refuses to start on
// a bad file rather than serve without rules.
func TestConfigErrors(t *testing.T) {
	if env.proxyErr != nil {
		t.Fatalf("no cri-mirror-proxy binary: %v", env.proxyErr)
	}
	dir := t.TempDir()
	emptyDir := filepath.Join(dir, "empty.d")
	if err := os.MkdirAll(emptyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(path, body string) string {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := write(filepath.Join(dir, "good.conf"), registriesConf(sourceRule("m1")))
	cases := []struct {
		name     string
		main     string // body of the main file ("" = good.conf)
		dropIn   string // body of a drop-in 50-bad.conf, if any
		wantText []string
	}{
		{name: "bad TOML", main: "[[registry]\nprefix = \"source.test\"\n", wantText: []string{"TOML"}},
		{name: "unknown key", main: "[[registry]]\nprefix = \"source.test\"\nlocation = \"source.test\"\nmirrors = 1\n", wantText: []string{"mirrors"}},
		{name: "mirror location with a scheme", main: "[[registry]]\nprefix = \"source.test\"\nlocation = \"source.test\"\n[[registry.mirror]]\nlocation = \"http://127.0.0.1:5000/m\"\n", wantText: []string{"http://127.0.0.1:5000/m"}},
		{name: "mirror location not a host", main: "[[registry]]\nprefix = \"source.test\"\nlocation = \"source.test\"\n[[registry.mirror]]\nlocation = \"mirror\"\n", wantText: []string{`"mirror"`}},
		{name: "conflicting prefixes", main: "[[registry]]\nprefix = \"source.test\"\nlocation = \"source.test\"\n[[registry]]\nprefix = \"source.test\"\nlocation = \"other.test\"\n", wantText: []string{"source.test"}},
		{name: "conflicting insecure", main: "[[registry]]\nprefix = \"a.test/x\"\nlocation = \"a.test\"\n[[registry]]\nprefix = \"a.test/y\"\nlocation = \"a.test\"\ninsecure = true\n", wantText: []string{"insecure"}},
		{name: "bad drop-in", dropIn: "[[registry]]\nprefix = \"source.test\"\nlocation = \"source.test\"\n[[registry.mirror]]\nlocation = \"127.0.0.1:5000/m\"\npull_from_mirror = \"tag-only\"\n", wantText: []string{"pull_from_mirror"}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mainPath, confDir, badFile := good, emptyDir, ""
			if tc.main != "" {
				mainPath = write(filepath.Join(dir, fmt.Sprintf("case%d", i), "registries.conf"), tc.main)
				badFile = mainPath
			}
			if tc.dropIn != "" {
				confDir = filepath.Join(dir, fmt.Sprintf("case%d", i), "registries.conf.d")
				badFile = write(filepath.Join(confDir, "50-bad.conf"), tc.dropIn)
			}
			out, stderr, err := run(30*time.Second, "", nil, env.proxyBin, "check-config",
				"--registries-conf", mainPath, "--registries-conf-dir", confDir)
			text := out + stderr
			if err == nil {
				// serve would start on it too: that costs its timeout below, and says nothing new.
				t.Fatalf("check-config exited 0 on a bad file (%s)\n%s", tc.name, text)
			} else {
				if !strings.Contains(text, badFile) {
					t.Errorf("check-config error does not name the file %s:\n%s", badFile, text)
				}
				for _, w := range tc.wantText {
					if !strings.Contains(text, w) {
						t.Errorf("check-config error does not say %q:\n%s", w, text)
					}
				}
			}

			// serve: fatal at start, with the same message, and no socket left behind.
			sock := filepath.Join(dir, fmt.Sprintf("s%d.sock", i))
			out, stderr, err = run(10*time.Second, "", nil, env.proxyBin, "serve",
				"--listen", "unix://"+sock, "--runtime-endpoint", "unix://"+env.ctd.sock,
				"--registries-conf", mainPath, "--registries-conf-dir", confDir,
				"--state-dir", filepath.Join(dir, fmt.Sprintf("state%d", i)), "--metrics-address", "")
			switch {
			case err == nil || strings.Contains(err.Error(), "timed out"):
				t.Errorf("serve on a bad file: %v; want it to exit non-zero at once\n%s%s", err, out, stderr)
			case !strings.Contains(out+stderr, badFile):
				t.Errorf("serve on a bad file: the error does not name %s:\n%s%s", badFile, out, stderr)
			default:
				if _, err := os.Lstat(sock); err == nil {
					t.Errorf("serve on a bad file left a socket %s", sock)
				}
			}
		})
	}
}
