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

// installer runs the DaemonSet's install.sh against a directory standing in
// for the node, with nsenter replaced by a stub that records the commands
// run on the host (and runs grep, which reads files), and a stub binary
// whose check-config refuses rules that say INVALID.
type installer struct {
	t   *testing.T
	dir string
	cm  configMap
}

func newInstaller(t *testing.T) *installer {
	for _, tool := range []string{"sh", "cmp", "cp", "mv", "chmod", "dirname", "basename", "mkdir", "mktemp", "rm", "rmdir", "tr", "sed", "grep", "head"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: %v", tool, err)
		}
	}
	m := kubernetesFiles(t)["ConfigMap/cri-mirror-proxy"]
	if m == nil {
		t.Fatal("no ConfigMap/cri-mirror-proxy")
	}
	in := &installer{t: t, dir: t.TempDir()}
	m.decode(t, &in.cm)

	in.write(in.path("config", "install.sh"), in.cm.Data["install.sh"], 0o644)
	in.write(in.path("config", "50-cri-mirror-proxy.conf"), in.cm.Data["50-cri-mirror-proxy.conf"], 0o644)
	unit, err := os.ReadFile(filepath.Join("systemd", "cri-mirror-proxy.service"))
	if err != nil {
		t.Fatal(err)
	}
	in.write(in.path("image", "cri-mirror-proxy.service"), string(unit), 0o644)
	const binary = "#!/bin/sh\n# stands in for cri-mirror-proxy\n[ \"$1\" = check-config ] || exit 2\n! grep -q INVALID \"$CONFIG_DIR\"/*.conf\n"
	in.write(in.path("image", "cri-mirror-proxy"), binary, 0o755)
	// The host directories the DaemonSet mounts; hostPath creates the two
	// that may be missing, and /etc/systemd/system always exists.
	for _, d := range []string{"opt/cri-mirror-proxy", "etc/systemd/system", "etc/cri-mirror-proxy"} {
		if err := os.MkdirAll(in.path("host", d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	in.write(in.path("stubs", "nsenter"), `#!/bin/sh
while [ "$1" != -- ]; do shift; done
shift
echo "$*" >> "$HOST_LOG"
case "$1 $2" in
"systemctl is-active") [ -z "$STUB_INACTIVE" ] ;;
grep*) exec "$@" ;;
esac
`, 0o755)
	if err := os.MkdirAll(in.path("proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	return in
}

func (in *installer) path(parts ...string) string {
	return filepath.Join(append([]string{in.dir}, parts...)...)
}

func (in *installer) write(file, body string, mode os.FileMode) {
	in.t.Helper()
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		in.t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(body), mode); err != nil {
		in.t.Fatal(err)
	}
}

func (in *installer) read(file string) string {
	in.t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		in.t.Fatal(err)
	}
	return string(b)
}

// run runs install.sh MODE and returns the commands it ran on the host, its
// stderr and whether it succeeded.
func (in *installer) run(mode string, env ...string) (calls []string, stderr string, ok bool) {
	in.t.Helper()
	os.Remove(in.path("host.log"))
	cmd := exec.Command("sh", in.path("config", "install.sh"), mode)
	cmd.Env = append(os.Environ(),
		"PATH="+in.path("stubs")+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HOST_ROOT="+in.path("host"), "CONFIG_DIR="+in.path("config"),
		"PROXY_BIN="+in.path("image", "cri-mirror-proxy"), "PROXY_UNIT="+in.path("image", "cri-mirror-proxy.service"),
		"PROC="+in.path("proc"), "KUBELET_CONFIG="+in.path("host", "var/lib/kubelet/config.yaml"),
		"READY_URL=http://127.0.0.1:9464/readyz", "STUB_INACTIVE=",
		"HOST_LOG="+in.path("host.log"))
	cmd.Env = append(cmd.Env, env...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err := cmd.Run()
	if b, err := os.ReadFile(in.path("host.log")); err == nil {
		calls = strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	return calls, errb.String(), err == nil
}

// mustRun is run that fails the test when the script fails.
func (in *installer) mustRun(mode string, env ...string) []string {
	in.t.Helper()
	calls, stderr, ok := in.run(mode, env...)
	if !ok {
		in.t.Fatalf("install.sh %s failed; host calls %q\nstderr: %s", mode, calls, stderr)
	}
	return calls
}

const (
	nodeBin      = "opt/cri-mirror-proxy/bin/cri-mirror-proxy"
	nodeUnit     = "etc/systemd/system/cri-mirror-proxy.service"
	shippedUnit  = "opt/cri-mirror-proxy/cri-mirror-proxy.service"
	nodeDropIn   = "etc/systemd/system/cri-mirror-proxy.service.d/10-daemonset.conf"
	nodeRulesDir = "etc/cri-mirror-proxy/registries.conf.d"
	nodeRules    = nodeRulesDir + "/50-cri-mirror-proxy.conf"
)

var readyCalls = []string{"systemctl is-active --quiet cri-mirror-proxy.service", "wget -q -T 5 -O /dev/null http://127.0.0.1:9464/readyz"}

func TestInstallScript(t *testing.T) {
	in := newInstaller(t)

	// A fresh node: everything is written, then enable and restart, and the
	// install succeeds once the proxy is ready.
	calls := in.mustRun("install")
	want := append([]string{"systemctl daemon-reload", "systemctl enable cri-mirror-proxy.service", "systemctl restart cri-mirror-proxy.service"}, readyCalls...)
	if !slices.Equal(calls, want) {
		t.Errorf("first install ran %q, want %q", calls, want)
	}
	for file, mode := range map[string]os.FileMode{nodeBin: 0o755, nodeUnit: 0o644, shippedUnit: 0o644, nodeDropIn: 0o644, nodeRules: 0o644} {
		fi, err := os.Stat(in.path("host", file))
		if err != nil {
			t.Fatalf("not installed: %v", err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", file, fi.Mode().Perm(), mode)
		}
	}
	unit := in.read(in.path("image", "cri-mirror-proxy.service"))
	if in.read(in.path("host", nodeUnit)) != unit {
		t.Error("the unit on the node differs from deploy/systemd/cri-mirror-proxy.service")
	}
	if got := in.read(in.path("host", nodeRules)); got != in.cm.Data["50-cri-mirror-proxy.conf"] {
		t.Errorf("rules on the node:\n%s", got)
	}
	// The drop-in runs the installed binary on the proxy's own rules only.
	dropIn := unitOptions(t, []byte(in.read(in.path("host", nodeDropIn))))
	if got := dropIn["Service.ExecStart"]; !slices.Equal(got, []string{"", "/" + nodeBin + " serve"}) {
		t.Errorf("drop-in ExecStart=%q, want the reset and /%s serve", got, nodeBin)
	}
	if got := dropIn["Service.Environment"]; !slices.Equal(got, []string{
		"CRI_MIRROR_PROXY_REGISTRIES_CONF=/dev/null", "CRI_MIRROR_PROXY_REGISTRIES_CONF_DIR=/" + nodeRulesDir,
	}) {
		t.Errorf("drop-in Environment=%q", got)
	}
	var leftovers []string
	filepath.WalkDir(in.path("host"), func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".") {
			leftovers = append(leftovers, p)
		}
		return nil
	})
	if len(leftovers) > 0 {
		t.Errorf("temporary files left behind: %q", leftovers)
	}

	// The pod restarts with nothing new: no restart, just make sure it runs.
	calls = in.mustRun("install")
	if want := append([]string{"systemctl daemon-reload", "systemctl enable --now cri-mirror-proxy.service"}, readyCalls...); !slices.Equal(calls, want) {
		t.Errorf("second install ran %q, want %q", calls, want)
	}

	// A new image with a new unit: the node's unit is the one shipped last,
	// so it is upgraded and the proxy restarted.
	unit2 := unit + "# second release\n"
	in.write(in.path("image", "cri-mirror-proxy.service"), unit2, 0o644)
	calls = in.mustRun("install")
	if !slices.Contains(calls, "systemctl restart cri-mirror-proxy.service") {
		t.Errorf("an upgraded unit did not restart the proxy: %q", calls)
	}
	if in.read(in.path("host", nodeUnit)) != unit2 {
		t.Error("the unit, unchanged on the node, was not upgraded")
	}

	// The unit changed on the node: the next image's unit does not replace
	// it, and the installer says so.
	local := unit2 + "# changed on the node\n"
	in.write(in.path("host", nodeUnit), local, 0o644)
	in.write(in.path("image", "cri-mirror-proxy.service"), unit2+"# third release\n", 0o644)
	calls, stderr, ok := in.run("install")
	if !ok {
		t.Fatalf("install over a changed unit failed: %s", stderr)
	}
	if in.read(in.path("host", nodeUnit)) != local {
		t.Error("the unit changed on the node was overwritten")
	}
	if !strings.Contains(stderr, "changed on this node") {
		t.Errorf("no word about the kept unit; stderr %q", stderr)
	}
	if in.read(in.path("host", shippedUnit)) != unit2+"# third release\n" {
		t.Error("the shipped unit beside the binary is not the new one")
	}
	if slices.Contains(calls, "systemctl restart cri-mirror-proxy.service") {
		t.Errorf("a kept unit restarted the proxy: %q", calls)
	}

	// A proxy that does not come up fails the install (and the pod).
	calls, stderr, ok = in.run("install", "STUB_INACTIVE=1", "READY_TRIES=1")
	if ok || !strings.Contains(stderr, "is not active") {
		t.Errorf("install succeeded with the proxy down; calls %q, stderr %q", calls, stderr)
	}
	if _, stderr, ok := in.run("ready", "STUB_INACTIVE=1"); ok || !strings.Contains(stderr, "is not active") {
		t.Errorf("ready with the unit inactive: ok=%v, stderr %q", ok, stderr)
	}
	if calls := in.mustRun("ready", "READY_URL="); !slices.Equal(calls, readyCalls[:1]) {
		t.Errorf("ready without READY_URL ran %q, want %q", calls, readyCalls[:1])
	}

	// Nothing changed in the ConfigMap: the sync pass does nothing.
	if calls = in.mustRun("sync-once"); len(calls) != 0 {
		t.Errorf("sync without changes ran %q", calls)
	}

	// Changed rules are installed and the proxy reloads them.
	rules := in.cm.Data["50-cri-mirror-proxy.conf"] + "\n[[registry]]\nprefix = \"quay.io\"\nlocation = \"quay.io\"\n"
	in.write(in.path("config", "50-cri-mirror-proxy.conf"), rules, 0o644)
	calls = in.mustRun("sync-once")
	if want := []string{"systemctl reload cri-mirror-proxy.service"}; !slices.Equal(calls, want) {
		t.Errorf("sync of new rules ran %q, want %q", calls, want)
	}
	if got := in.read(in.path("host", nodeRules)); got != rules {
		t.Errorf("rules on the node:\n%s\nwant:\n%s", got, rules)
	}

	// Rules the proxy refuses stay off the node.
	in.write(in.path("config", "50-cri-mirror-proxy.conf"), "INVALID\n", 0o644)
	calls, stderr, _ = in.run("sync-once")
	if len(calls) != 0 || !strings.Contains(stderr, "the node keeps its rules") {
		t.Errorf("sync of invalid rules ran %q, stderr %q", calls, stderr)
	}
	if got := in.read(in.path("host", nodeRules)); got != rules {
		t.Errorf("invalid rules reached the node:\n%s", got)
	}

	// Nothing under /etc/containers: CRI-O's and Podman's files are theirs.
	if _, err := os.Stat(in.path("host", "etc/containers")); err == nil {
		t.Error("the installer wrote under /etc/containers")
	}
}

func TestUninstallScript(t *testing.T) {
	in := newInstaller(t)

	// A node the installer never reached: nothing to stop, nothing fails.
	if calls := in.mustRun("uninstall"); slices.Contains(calls, "systemctl disable --now cri-mirror-proxy.service") {
		t.Errorf("uninstall on a node without the proxy ran %q", calls)
	}

	in.mustRun("install")
	in.write(in.path("host", nodeRulesDir, "60-local.conf"), "# the node's own\n", 0o644)

	// kubelet still uses the proxy, named in the config file it was given:
	// refused, nothing touched.
	kubeletConf := in.path("host", "etc/kubernetes/kubelet.yaml")
	in.write(kubeletConf, "imageServiceEndpoint: unix:///run/cri-mirror-proxy/cri.sock\n", 0o644)
	in.write(in.path("proc", "4242", "cmdline"), "/usr/bin/kubelet\x00--config="+kubeletConf+"\x00--v=2\x00", 0o644)
	in.write(in.path("proc", "4243", "cmdline"), "/usr/bin/containerd\x00", 0o644)
	calls, stderr, ok := in.run("uninstall")
	if ok || !strings.Contains(stderr, "still uses /run/cri-mirror-proxy/cri.sock") {
		t.Errorf("uninstall with kubelet on the proxy: ok=%v, stderr %q", ok, stderr)
	}
	if slices.ContainsFunc(calls, func(c string) bool { return strings.HasPrefix(c, "systemctl") }) {
		t.Errorf("uninstall refused but ran %q", calls)
	}
	if _, err := os.Stat(in.path("host", nodeBin)); err != nil {
		t.Errorf("refused uninstall removed the binary: %v", err)
	}

	// On the command line too.
	in.write(kubeletConf, "imageServiceEndpoint: unix:///run/containerd/containerd.sock\n", 0o644)
	in.write(in.path("proc", "4242", "cmdline"), "kubelet\x00--image-service-endpoint=unix:///run/cri-mirror-proxy/cri.sock\x00", 0o644)
	if _, _, ok := in.run("uninstall"); ok {
		t.Error("uninstall went ahead with kubelet's flag naming the proxy")
	}

	// kubelet back on the runtime: the proxy is stopped and its files go;
	// the node's own files stay.
	in.write(in.path("proc", "4242", "cmdline"), "/usr/bin/kubelet\x00--config="+kubeletConf+"\x00", 0o644)
	calls = in.mustRun("uninstall")
	if want := []string{"grep -qsF /run/cri-mirror-proxy/cri.sock " + kubeletConf, "grep -qsF /run/cri-mirror-proxy/cri.sock " + in.path("host", "var/lib/kubelet/config.yaml"),
		"systemctl disable --now cri-mirror-proxy.service", "systemctl daemon-reload"}; !slices.Equal(calls, want) {
		t.Errorf("uninstall ran %q, want %q", calls, want)
	}
	for _, f := range []string{nodeBin, nodeUnit, shippedUnit, nodeDropIn, nodeRules} {
		if _, err := os.Stat(in.path("host", f)); err == nil {
			t.Errorf("%s is still there", f)
		}
	}
	if _, err := os.Stat(in.path("host", nodeRulesDir, "60-local.conf")); err != nil {
		t.Errorf("the node's own rules file went: %v", err)
	}

	// A unit changed on the node is the node's: it stays.
	in.mustRun("install")
	in.write(in.path("host", nodeUnit), "# the node's unit\n", 0o644)
	in.mustRun("uninstall")
	if got := in.read(in.path("host", nodeUnit)); got != "# the node's unit\n" {
		t.Errorf("uninstall removed or changed a unit changed on the node: %q", got)
	}
}
