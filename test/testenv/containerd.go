package testenv

import (
	"fmt"
	"os"
	"path/filepath"
)

// PublicHosts are the public registries the tests' images name. Every environment points
// them at a closed loopback port, so nothing leaves the machine and a pull from them fails at
// once (connection refused).
var PublicHosts = []string{"docker.io", "registry.k8s.io", "k8s.gcr.io", "gcr.io", "quay.io"}

// Containerd is the layout of one containerd instance under its directory.
type Containerd struct {
	Dir    string // everything below lives here
	Config string // config.toml
	Socket string // the CRI (and containerd) socket
	Certs  string // certs.d: one HOST/hosts.toml per registry host
}

// ContainerdAt names the files of a containerd under dir (nothing is written).
func ContainerdAt(dir string) Containerd {
	return Containerd{
		Dir:    dir,
		Config: filepath.Join(dir, "config.toml"),
		Socket: filepath.Join(dir, "containerd.sock"),
		Certs:  filepath.Join(dir, "certs.d"),
	}
}

// WriteContainerd writes the config of a containerd under dir with its own root, state and
// socket, the CRI plugin without cgroups or AppArmor (it runs inside a test machine), and
// registries configured only through certs.d: each host of hosts is served at its URL
// (e.g. "http://127.0.0.1:5000"), and each of PublicHosts not configured otherwise, already on
// disk or in hosts, at closed (a URL nothing answers on). Run it as:
//
//	containerd --config c.Config
func WriteContainerd(dir string, hosts map[string]string, closed string) (Containerd, error) {
	return WriteContainerdCRI(dir, hosts, closed, CRIOptions{})
}

// CRIOptions are the CRI plugin settings a containerd needs to run pods, beyond pulling
// images. The zero value is WriteContainerd's configuration.
type CRIOptions struct {
	// SandboxImage is the pause image (sandbox_image) containerd pulls by itself, with its own
	// certs.d, whoever asks for a pod; empty keeps containerd's default.
	SandboxImage string
	// CNIConfDir and CNIBinDir are where containerd finds the pod network's configuration
	// (see WriteCNI) and the plugins; empty keeps containerd's defaults under /etc and /opt.
	CNIConfDir, CNIBinDir string
	// Cgroups lets runc put containers in cgroups (cgroupfs), which container stats and
	// resource limits need; without it containerd runs them with cgroups disabled.
	Cgroups bool
}

// WriteContainerdCRI is WriteContainerd with the CRI plugin settings of o.
func WriteContainerdCRI(dir string, hosts map[string]string, closed string, o CRIOptions) (Containerd, error) {
	c := ContainerdAt(dir)
	for _, sub := range []string{"root", "state", "certs.d"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return c, err
		}
	}
	for host, server := range hosts {
		if err := WriteHost(c.Certs, host, server); err != nil {
			return c, err
		}
	}
	for _, host := range PublicHosts {
		if _, err := os.Stat(filepath.Join(c.Certs, host, "hosts.toml")); err == nil {
			continue
		}
		if err := WriteHost(c.Certs, host, closed); err != nil {
			return c, err
		}
	}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q

[grpc]
  address = %q

[plugins."io.containerd.grpc.v1.cri"]
  disable_cgroup = %t
  disable_apparmor = true
  restrict_oom_score_adj = true
%s  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
%s`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.Socket, !o.Cgroups, sandbox(o), c.Certs, cni(o))
	return c, os.WriteFile(c.Config, []byte(cfg), 0o644)
}

func sandbox(o CRIOptions) string {
	if o.SandboxImage == "" {
		return ""
	}
	return fmt.Sprintf("  sandbox_image = %q\n", o.SandboxImage)
}

func cni(o CRIOptions) string {
	if o.CNIConfDir == "" && o.CNIBinDir == "" {
		return ""
	}
	s := "  [plugins.\"io.containerd.grpc.v1.cri\".cni]\n"
	if o.CNIConfDir != "" {
		s += fmt.Sprintf("    conf_dir = %q\n", o.CNIConfDir)
	}
	if o.CNIBinDir != "" {
		s += fmt.Sprintf("    bin_dir = %q\n", o.CNIBinDir)
	}
	return s
}

// WriteHost makes containerd reach host (a registry host[:port]) at server (http://...)
// through certs/HOST/hosts.toml. containerd reads certs.d at every pull: no restart needed.
func WriteHost(certs, host, server string) error {
	toml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", server, server)
	return writeHost(certs, host, toml)
}

// WriteMirrorHost makes containerd pull host's images from the registry at url under path
// (e.g. "/v2/mirror/gcr.io"), and never from fallback (a URL nothing answers on): containerd's
// own mirroring, the baseline the proxy is compared with. override_path keeps containerd from
// appending /v2 itself.
func WriteMirrorHost(certs, host, url, path, fallback string) error {
	toml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n",
		fallback, url+path)
	return writeHost(certs, host, toml)
}

func writeHost(certs, host, toml string) error {
	dir := filepath.Join(certs, host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(toml), 0o644)
}
