package deploy

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/unit"
)

const unitFile = "systemd/cri-mirror-proxy.service"

// needTool returns the path of an external checker. Where it is missing the
// test is skipped, except in CI (CI set), where test/tools.sh installs it and
// a skip would hide that the check never ran.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found (Debian package %s, installed by test/tools.sh): %v", name, pkg, err)
	}
	t.Skipf("%s not installed (Debian package %s)", name, pkg)
	return ""
}

// unitOptions parses a unit file and returns the values of section.name,
// in order.
func unitOptions(t *testing.T, data []byte) map[string][]string {
	t.Helper()
	opts, err := unit.DeserializeOptions(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("parse unit: %v", err)
	}
	out := map[string][]string{}
	for _, o := range opts {
		out[o.Section+"."+o.Name] = append(out[o.Section+"."+o.Name], o.Value)
	}
	return out
}

func TestSystemdUnitSettings(t *testing.T) {
	data, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	o := unitOptions(t, data)
	last := func(key string) string {
		if v := o[key]; len(v) > 0 {
			return v[len(v)-1]
		}
		return ""
	}
	if got := last("Service.Type"); got != "notify" {
		t.Errorf("Type=%s: want notify, so that units ordered after this one find the socket", got)
	}

	// A path that does not exist on this node must not fail the start: a
	// CRI-O node has no /run/containerd, a containerd node no /run/crio.
	var rw []string
	for _, v := range o["Service.ReadWritePaths"] {
		rw = append(rw, strings.Fields(v)...)
	}
	for _, p := range rw {
		if !strings.HasPrefix(p, "-") {
			t.Errorf("ReadWritePaths=%s: without a leading -, the unit fails to start where the path is missing", p)
		}
	}
	for _, want := range []string{"-/run/containerd", "-/run/crio"} {
		if !slices.Contains(rw, want) {
			t.Errorf("ReadWritePaths lacks %s (have %q)", want, rw)
		}
	}

	// The README names ~/.docker/config.json as a credential source: the
	// unit must not hide home directories.
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(readme, []byte("~/.docker/config.json")) {
		if ph := last("Service.ProtectHome"); ph != "" && ph != "no" && ph != "read-only" {
			t.Errorf("ProtectHome=%s hides ~/.docker/config.json, which the README lists as a credential source", ph)
		}
	}

	// --listen-group members must be able to reach the socket: the runtime
	// directory (owned by root) must let others through.
	mode, err := strconv.ParseUint(last("Service.RuntimeDirectoryMode"), 8, 32)
	if err != nil {
		t.Fatalf("RuntimeDirectoryMode=%q: %v", last("Service.RuntimeDirectoryMode"), err)
	}
	if mode&0o001 == 0 {
		t.Errorf("RuntimeDirectoryMode=%04o: a --listen-group member (neither root nor in root's group) cannot reach the socket", mode)
	}

	// The socket's group change needs CAP_CHOWN, and nothing more is granted.
	if caps := strings.Fields(last("Service.CapabilityBoundingSet")); !slices.Equal(caps, []string{"CAP_CHOWN"}) {
		t.Errorf("CapabilityBoundingSet=%q, want CAP_CHOWN only (--listen-group)", caps)
	}
	for key, want := range map[string]string{
		"Service.NoNewPrivileges":  "yes",
		"Service.ProtectSystem":    "strict",
		"Service.SystemCallFilter": "@system-service",
	} {
		if got := last(key); got != want {
			t.Errorf("%s=%s, want %s", key, got, want)
		}
	}
	// chown is in @privileged: denying it would break --listen-group.
	for _, v := range o["Service.SystemCallFilter"] {
		if strings.HasPrefix(v, "~") && (strings.Contains(v, "@privileged") || strings.Contains(v, "@chown")) {
			t.Errorf("SystemCallFilter=%s denies chown, which --listen-group needs", v)
		}
	}
}

// TestSystemdVerify runs systemd-analyze verify on the unit and on the unit
// the OpenShift MachineConfig writes, in a directory standing in for the
// node's root (no systemd needs to be running): any warning fails. It also
// holds the hardening level: systemd-analyze security must rate the unit at
// 3.0 or better.
func TestSystemdVerify(t *testing.T) {
	analyze := needTool(t, "systemd-analyze", "systemd")
	data, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	units := map[string][]byte{"cri-mirror-proxy.service": data}
	for name, body := range machineConfigUnits(t) {
		units["openshift-"+name] = body
	}
	for name, body := range units {
		t.Run(name, func(t *testing.T) {
			root := verifyRoot(t, name, body, nil)
			cmd := exec.Command(analyze, "verify", "--root="+root, "--man=no", name)
			if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
				t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
			}
			if name != "cri-mirror-proxy.service" {
				return
			}
			cmd = exec.Command(analyze, "security", "--offline=true", "--threshold=30", "--root="+root, name)
			if out, err := cmd.CombinedOutput(); err != nil {
				// The verdict is the last line; the table above it lists every setting.
				lines := strings.Split(strings.TrimSpace(string(out)), "\n")
				t.Errorf("systemd-analyze security --threshold=30: %v: %s", err, lines[len(lines)-1])
			}
		})
	}
}

// verifyRoot lays out a root directory holding the unit and its drop-ins, systemd's own
// units (verify needs the targets a service depends on) and an empty
// executable at every absolute path the unit runs, since verify checks that
// each command exists.
func verifyRoot(t *testing.T, name string, body []byte, dropIns map[string][]byte) string {
	t.Helper()
	root := t.TempDir()
	write := func(p string, data []byte, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(root, "etc/systemd/system", name), body, 0o644)
	for file, data := range dropIns {
		write(filepath.Join(root, "etc/systemd/system", name+".d", file), data, 0o644)
		body = append(append(slices.Clip(body), '\n'), data...) // their commands must exist too
	}

	var sys string
	for _, d := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			sys = d
			break
		}
	}
	if sys == "" {
		t.Fatal("no /usr/lib/systemd/system: systemd's own units are needed to verify a service")
	}
	entries, err := os.ReadDir(sys)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(root, "usr/lib/systemd/system")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		src := filepath.Join(sys, e.Name())
		switch e.Type() {
		case fs.ModeSymlink:
			target, err := os.Readlink(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, filepath.Join(dst, e.Name())); err != nil {
				t.Fatal(err)
			}
		case 0:
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			write(filepath.Join(dst, e.Name()), b, 0o644)
		}
	}

	o := unitOptions(t, body)
	for key, values := range o {
		if !strings.HasPrefix(key, "Service.Exec") {
			continue
		}
		for _, v := range values {
			f := strings.Fields(v)
			if len(f) == 0 {
				continue
			}
			cmd := strings.TrimLeft(f[0], "-@:+!")
			if !path.IsAbs(cmd) {
				t.Errorf("%s=%s: give the command's absolute path", key, v)
				continue
			}
			write(filepath.Join(root, cmd), []byte("#!/bin/sh\n"), 0o755)
		}
	}
	return root
}

// machineConfigUnits returns the systemd units the OpenShift MachineConfig
// writes, by file name.
func machineConfigUnits(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, m := range manifests(t, filepath.Join("openshift", "*.yaml")) {
		if m.head.Kind != "MachineConfig" {
			continue
		}
		var mc machineConfig
		m.decode(t, &mc)
		for _, f := range mc.Spec.Config.Storage.Files {
			if !strings.HasPrefix(f.Path, "/etc/systemd/system/") {
				continue
			}
			data, err := dataURL(f.Contents.Source)
			if err != nil {
				t.Fatalf("%s %s: %v", m.file, f.Path, err)
			}
			out[path.Base(f.Path)] = data
		}
	}
	return out
}

// TestMachineConfigUnitReady checks that the unit the MachineConfig writes is
// started only once the proxy serves: kubelet is ordered after it, and an
// ordering only waits for readiness with Type=notify. Under podman the
// notification comes from the container (--sdnotify=container), which
// systemd accepts only with NotifyAccess=all.
func TestMachineConfigUnitReady(t *testing.T) {
	units := machineConfigUnits(t)
	if len(units) == 0 {
		t.Fatal("the MachineConfig writes no unit")
	}
	for name, body := range units {
		o := unitOptions(t, body)
		get := func(key string) string { return strings.Join(o[key], " ") }
		if get("Service.Type") != "notify" {
			t.Errorf("%s: Type=%s, want notify: Before=kubelet.service only waits for a started unit", name, get("Service.Type"))
		}
		if !slices.Contains(strings.Fields(get("Unit.Before")), "kubelet.service") {
			t.Errorf("%s: not ordered before kubelet.service", name)
		}
		if exec := get("Service.ExecStart"); strings.Contains(exec, "podman run") {
			if !strings.Contains(exec, "--sdnotify=container") {
				t.Errorf("%s: podman run without --sdnotify=container: the proxy's READY=1 never reaches systemd", name)
			}
			if get("Service.NotifyAccess") != "all" {
				t.Errorf("%s: NotifyAccess=%s, want all: the notification comes from the container", name, get("Service.NotifyAccess"))
			}
			// The proxy's own rules only, never CRI-O's registries.conf.
			if !strings.Contains(exec, "--registries-conf /dev/null") {
				t.Errorf("%s: the proxy would also read /etc/containers/registries.conf", name)
			}
		}
	}
}

// TestMachineConfigDecodeHint runs the decode command the MachineConfig's
// comments give and compares its output with the file it names.
func TestMachineConfigDecodeHint(t *testing.T) {
	for _, tool := range []string{"sh", "grep", "sed", "base64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: %v", tool, err)
		}
	}
	const file = "openshift/machineconfig.yaml"
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var hints int
	for _, line := range strings.Split(string(data), "\n") {
		cmdline, ok := strings.CutPrefix(line, "#   grep -A4 'path: ")
		if !ok {
			continue
		}
		hints++
		target, _, _ := strings.Cut(cmdline, "'")
		want := machineConfigUnits(t)[path.Base(target)]
		if want == nil {
			t.Errorf("the hint decodes %s, which the MachineConfig does not write", target)
			continue
		}
		cmd := exec.Command("sh", "-c", strings.TrimPrefix(line, "#   "))
		cmd.Dir = ".." // the hint names the file from the repository's root
		got, err := cmd.Output()
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s\nprints (%v):\n%s\nwant:\n%s", line, err, got, want)
		}
	}
	if hints == 0 {
		t.Errorf("%s: no decode hint in the comments", file)
	}
}

// TestInstalledUnitVerifies runs systemd-analyze verify on the unit as the
// DaemonSet installs it: the unit with the installer's drop-in.
func TestInstalledUnitVerifies(t *testing.T) {
	analyze := needTool(t, "systemd-analyze", "systemd")
	in := newInstaller(t)
	in.mustRun("install")
	const name = "cri-mirror-proxy.service"
	unit := []byte(in.read(in.path("host", nodeUnit)))
	dropIn := []byte(in.read(in.path("host", nodeDropIn)))
	root := verifyRoot(t, name, unit, map[string][]byte{filepath.Base(nodeDropIn): dropIn})
	cmd := exec.Command(analyze, "verify", "--root="+root, "--man=no", name)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify of the unit with %s: %v\n%s\n%s", nodeDropIn, err, out, dropIn)
	}
}
