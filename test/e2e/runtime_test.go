//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestRuntimePassThrough: RuntimeService calls on the proxy socket reach the runtime, so one
// socket serves as both runtime and image endpoint.
func TestRuntimePassThrough(t *testing.T) {
	eachRuntime(t, func(t *testing.T, rt *criRuntime) {
		p := startProxyOn(t, rt, registriesConf(sourceRule("m1")))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		v, err := p.rt.Version(ctx, &runtimeapi.VersionRequest{})
		if err != nil {
			t.Fatalf("Version through the proxy: %v", err)
		}
		if v.GetRuntimeName() != rt.runtimeName {
			t.Errorf("RuntimeName = %q, want %s", v.GetRuntimeName(), rt.runtimeName)
		}
		if _, err := p.rt.Status(ctx, &runtimeapi.StatusRequest{}); err != nil {
			t.Errorf("Status through the proxy: %v", err)
		}
		if _, err := p.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err != nil {
			t.Errorf("ListPodSandbox through the proxy: %v", err)
		}
		if out := p.mustCrictl("version"); !strings.Contains(out, rt.runtimeName) {
			t.Errorf("crictl version: %q", out)
		}
		p.mustCrictl("pods")
		p.mustCrictl("ps", "-a")
		if out := p.mustCrictl("imagefsinfo"); !strings.Contains(out, "usedBytes") {
			t.Errorf("crictl imagefsinfo: %q", out)
		}
		if out := p.mustCrictl("info"); !strings.Contains(out, "RuntimeReady") {
			t.Errorf("crictl info: %q", out)
		}
	})
}

// TestConcurrentPulls: many kubelet-style pulls of one reference at once all succeed with the
// same image id and leave exactly one original name.
func TestConcurrentPulls(t *testing.T) {
	eachRuntime(t, func(t *testing.T, rt *criRuntime) {
		p := startProxyOn(t, rt, registriesConf(sourceRule("m1")))
		ref := sourceHost + "/e2e/concurrent:v1"
		want := env.image("M:m1/e2e/concurrent:v1")
		const n = 8
		ids, errs := make([]string, n), make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ids[i], errs[i] = p.pull(ref)
			}()
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil || ids[i] != rt.id(want) {
				t.Errorf("pull %d: %q, %v; want %s", i, ids[i], errs[i], rt.id(want))
			}
		}
		checkNames(t, "ImageStatus", p.status(ref), []string{ref}, want.Digest)
		t.Logf("attempts for %d concurrent pulls: %v", n, p.metrics().Sum("cri_mirror_pull_attempts_total", nil))
	})
}

// TestCLI: resolve and check-config on files, without a running proxy.
func TestCLI(t *testing.T) {
	if env.proxyErr != nil {
		t.Fatalf("no cri-mirror-proxy binary: %v", env.proxyErr)
	}
	dir := t.TempDir()
	confDir := filepath.Join(dir, "d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	cli := func(args ...string) (string, string, error) {
		return run(time.Minute, "", nil, append([]string{env.proxyBin}, args...)...)
	}

	good := write("good.conf", registriesConf(sourceRule("m1", "m2")))
	if out, stderr, err := cli("check-config", "--registries-conf", good, "--registries-conf-dir", confDir); err != nil {
		t.Errorf("check-config on a valid file: %v\n%s%s", err, out, stderr)
	} else if !strings.Contains(out, env.mirrorLoc("m1")) {
		t.Errorf("check-config does not print the effective rules:\n%s", out)
	}

	out, stderr, err := cli("resolve", "--registries-conf", good, "--registries-conf-dir", confDir, sourceHost+"/e2e/x:v1")
	if err != nil {
		t.Fatalf("resolve: %v\n%s%s", err, out, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	wantRefs := []string{env.mirrorLoc("m1") + "/e2e/x:v1", env.mirrorLoc("m2") + "/e2e/x:v1", sourceHost + "/e2e/x:v1"}
	if len(lines) != len(wantRefs) {
		t.Fatalf("resolve printed %d lines, want %d:\n%s", len(lines), len(wantRefs), out)
	}
	for i, line := range lines {
		ref, reason, _ := strings.Cut(line, "\t")
		if ref != wantRefs[i] {
			t.Errorf("resolve line %d: ref %q, want %q", i+1, ref, wantRefs[i])
		}
		if strings.TrimSpace(reason) == "" {
			t.Errorf("resolve line %d has no reason: %q", i+1, line)
		}
	}

	for name, body := range map[string]string{
		"syntax.conf": "[[registry]\nprefix = \"source.test\"\n",
		"typo.conf":   "[[registry]]\nprefix = \"source.test\"\nlocation = \"source.test\"\n[[registry.mirror]]\nlocation = \"127.0.0.1:5000/m\"\npull_from_mirror = \"tag-only\"\n",
		"policy.conf": "[[registry]]\nprefix = \"source.test\"\nlocation = \"source.test\"\n[[registry.mirror]]\nlocation = \"127.0.0.1:5000/m\"\npull-from-mirror = \"sometimes\"\n",
	} {
		path := write(name, body)
		out, stderr, err := cli("check-config", "--registries-conf", path, "--registries-conf-dir", confDir)
		if err == nil {
			t.Errorf("check-config accepted %s:\n%s\noutput: %s", name, body, out)
			continue
		}
		if !strings.Contains(out+stderr, name) {
			t.Errorf("check-config error for %s does not name the file: %s%s", name, out, stderr)
		}
	}

	if out, _, err := cli("version"); err != nil || strings.TrimSpace(out) == "" {
		t.Errorf("version: %q, %v", out, err)
	}
}
