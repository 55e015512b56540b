package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestInstallScript runs the DaemonSet's install.sh against a directory
// standing in for the node, with nsenter replaced by a stub that records the
// systemctl calls, and a stub binary whose check-config refuses rules that
// say INVALID.
func TestInstallScript(t *testing.T) {
	for _, tool := range []string{"sh", "cmp", "cp", "mv", "chmod", "dirname", "basename"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: %v", tool, err)
		}
	}
	m := kubernetesFiles(t)["ConfigMap/cri-mirror-proxy"]
	if m == nil {
		t.Fatal("no ConfigMap/cri-mirror-proxy")
	}
	var cm configMap
	m.decode(t, &cm)

	dir := t.TempDir()
	p := func(parts ...string) string { return filepath.Join(append([]string{dir}, parts...)...) }
	write := func(file, body string, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	read := func(file string) string {
		t.Helper()
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	script := p("config", "install.sh")
	write(script, cm.Data["install.sh"], 0o644)
	write(p("config", "50-cri-mirror-proxy.conf"), cm.Data["50-cri-mirror-proxy.conf"], 0o644)
	unit, err := os.ReadFile(filepath.Join("systemd", "cri-mirror-proxy.service"))
	if err != nil {
		t.Fatal(err)
	}
	write(p("image", "cri-mirror-proxy.service"), string(unit), 0o644)
	const binary = "#!/bin/sh\n# stands in for cri-mirror-proxy\n[ \"$1\" = check-config ] || exit 2\n! grep -q INVALID \"$CONFIG_DIR\"/*.conf\n"
	write(p("image", "cri-mirror-proxy"), binary, 0o755)
	for _, d := range []string{"usr/local/bin", "etc/systemd/system", "etc/containers/registries.conf.d"} {
		if err := os.MkdirAll(p("host", d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(p("stubs", "nsenter"), "#!/bin/sh\nwhile [ \"$1\" != -- ]; do shift; done\nshift\necho \"$*\" >> \"$SYSTEMCTL_LOG\"\n", 0o755)

	run := func(mode string) (calls []string, stderr string) {
		t.Helper()
		os.Remove(p("systemctl.log"))
		cmd := exec.Command("sh", script, mode)
		cmd.Env = append(os.Environ(),
			"PATH="+p("stubs")+string(os.PathListSeparator)+os.Getenv("PATH"),
			"HOST_ROOT="+p("host"), "CONFIG_DIR="+p("config"),
			"PROXY_BIN="+p("image", "cri-mirror-proxy"), "PROXY_UNIT="+p("image", "cri-mirror-proxy.service"),
			"SYSTEMCTL_LOG="+p("systemctl.log"))
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if out, err := cmd.Output(); err != nil {
			t.Fatalf("install.sh %s: %v\nstdout: %s\nstderr: %s", mode, err, out, errb.String())
		}
		if b, err := os.ReadFile(p("systemctl.log")); err == nil {
			calls = strings.Split(strings.TrimSpace(string(b)), "\n")
		}
		return calls, errb.String()
	}
	installed := map[string]os.FileMode{
		p("host", "usr/local/bin/cri-mirror-proxy"):                            0o755,
		p("host", "etc/systemd/system/cri-mirror-proxy.service"):               0o644,
		p("host", "etc/containers/registries.conf.d/50-cri-mirror-proxy.conf"): 0o644,
	}

	// A fresh node: everything is copied, then enable and restart.
	calls, _ := run("install")
	want := []string{"systemctl daemon-reload", "systemctl enable cri-mirror-proxy.service", "systemctl restart cri-mirror-proxy.service"}
	if !slices.Equal(calls, want) {
		t.Errorf("first install ran %q, want %q", calls, want)
	}
	for file, mode := range installed {
		fi, err := os.Stat(file)
		if err != nil {
			t.Fatalf("not installed: %v", err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", file, fi.Mode().Perm(), mode)
		}
	}
	if read(p("host", "etc/systemd/system/cri-mirror-proxy.service")) != string(unit) {
		t.Error("the unit on the node differs from deploy/systemd/cri-mirror-proxy.service")
	}
	for _, d := range []string{"usr/local/bin", "etc/systemd/system", "etc/containers/registries.conf.d"} {
		entries, _ := os.ReadDir(p("host", d))
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				t.Errorf("temporary file left behind: %s/%s", d, e.Name())
			}
		}
	}

	// The pod restarts with nothing new: no restart, just make sure it runs.
	calls, _ = run("install")
	if want := []string{"systemctl daemon-reload", "systemctl enable --now cri-mirror-proxy.service"}; !slices.Equal(calls, want) {
		t.Errorf("second install ran %q, want %q", calls, want)
	}

	// Nothing changed in the ConfigMap: the sync pass does nothing.
	if calls, _ = run("sync-once"); len(calls) != 0 {
		t.Errorf("sync without changes ran %q", calls)
	}

	// Changed rules are installed and the proxy reloads them.
	rules := cm.Data["50-cri-mirror-proxy.conf"] + "\n[[registry]]\nprefix = \"quay.io\"\nlocation = \"quay.io\"\n"
	write(p("config", "50-cri-mirror-proxy.conf"), rules, 0o644)
	calls, _ = run("sync-once")
	if want := []string{"systemctl reload cri-mirror-proxy.service"}; !slices.Equal(calls, want) {
		t.Errorf("sync of new rules ran %q, want %q", calls, want)
	}
	if got := read(p("host", "etc/containers/registries.conf.d/50-cri-mirror-proxy.conf")); got != rules {
		t.Errorf("rules on the node:\n%s\nwant:\n%s", got, rules)
	}

	// Rules the proxy refuses stay off the node.
	write(p("config", "50-cri-mirror-proxy.conf"), "INVALID\n", 0o644)
	calls, stderr := run("sync-once")
	if len(calls) != 0 || !strings.Contains(stderr, "the node keeps its rules") {
		t.Errorf("sync of invalid rules ran %q, stderr %q", calls, stderr)
	}
	if got := read(p("host", "etc/containers/registries.conf.d/50-cri-mirror-proxy.conf")); got != rules {
		t.Errorf("invalid rules reached the node:\n%s", got)
	}
}
