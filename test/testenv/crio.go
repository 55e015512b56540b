package testenv

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// CRIO is the layout of one CRI-O instance under its directory: the second runtime the
// proxy is tested in front of.
type CRIO struct {
	Dir        string // everything below lives here
	Config     string // crio.conf
	Registries string // registries.conf: how each host is reached, no mirrors of its own
	RegDir     string // registries.conf.d, empty: keeps the host's drop-ins out
	Socket     string // the CRI socket
}

// Args are the command-line arguments that run CRI-O on this layout and nothing of the
// host's: no /etc/crio/crio.conf.d, no /etc/containers/registries.conf. (1.34 accepts the
// two registries flags though its --help does not show them.)
func (c CRIO) Args() []string {
	return []string{"--config", c.Config, "--config-dir", "",
		"--registries-conf", c.Registries, "--registries-conf-dir", c.RegDir}
}

// WriteCRIO writes the configuration of a CRI-O under dir that keeps every path it uses
// (storage, run state, logs, sockets, pinns, version files) below dir, with the runc, conmon
// and CNI plugins of Debian's packages, and registries reached only as hosts says: each host
// of hosts (a registry host[:port]) at its address (host[:port], plain HTTP), and each of
// PublicHosts not in hosts at closed (a host:port nothing answers on). pinns is CRI-O's
// helper binary, built with it. Run it as:
//
//	crio c.Args()...
func WriteCRIO(dir, pinns string, hosts map[string]string, closed string) (CRIO, error) {
	c := CRIO{
		Dir:        dir,
		Config:     filepath.Join(dir, "crio.conf"),
		Registries: filepath.Join(dir, "registries.conf"),
		RegDir:     filepath.Join(dir, "registries.conf.d"),
		Socket:     filepath.Join(dir, "crio.sock"),
	}
	for _, sub := range []string{"root", "run", "log", "exits", "attach", "ns", "hooks", "cni", "registries.conf.d"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return c, err
		}
	}
	if err := c.WriteRegistries(hosts, closed); err != nil {
		return c, err
	}
	policy := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`+"\n"), 0o644); err != nil {
		return c, err
	}
	p := func(sub string) string { return filepath.Join(dir, sub) }
	cfg := fmt.Sprintf(`[crio]
root = %q
runroot = %q
storage_driver = "overlay"
log_dir = %q
version_file = %q
version_file_persist = %q
clean_shutdown_file = %q

[crio.api]
listen = %q
stream_address = "127.0.0.1"
stream_port = "0"

[crio.runtime]
default_runtime = "runc"
cgroup_manager = "cgroupfs"
conmon = "/usr/bin/conmon"
conmon_cgroup = "pod"
pinns_path = %q
container_exits_dir = %q
container_attach_socket_dir = %q
namespaces_dir = %q
irqbalance_config_file = %q
irqbalance_config_restore_file = "disable"
hooks_dir = [%q]
cdi_spec_dirs = []

[crio.runtime.runtimes.runc]
runtime_path = "/usr/bin/runc"
runtime_root = %q
monitor_path = "/usr/bin/conmon"

[crio.image]
signature_policy = %q

[crio.network]
network_dir = %q
plugin_dirs = ["/usr/lib/cni"]

[crio.metrics]
enable_metrics = false

[crio.nri]
enable_nri = false
`, p("root"), p("run"), p("log"), p("run/version"), p("root/version"), p("root/clean.shutdown"),
		c.Socket,
		pinns, p("exits"), p("attach"), p("ns"), p("irqbalance"), p("hooks"),
		p("run/runc"),
		policy,
		p("cni"))
	return c, os.WriteFile(c.Config, []byte(cfg), 0o644)
}

// WriteRegistries (re)writes CRI-O's registries.conf: each host of hosts (a registry
// host[:port]) at its address (host[:port], plain HTTP), and each of PublicHosts not in hosts
// at closed. A running CRI-O reads it again on SIGHUP.
func (c CRIO) WriteRegistries(hosts map[string]string, closed string) error {
	var reg strings.Builder
	reg.WriteString("# written by the tests: every host reached on loopback, no mirrors\n")
	write := func(prefix, location string) {
		fmt.Fprintf(&reg, "\n[[registry]]\nprefix = %q\nlocation = %q\ninsecure = true\n", prefix, location)
	}
	for _, host := range slices.Sorted(maps.Keys(hosts)) {
		write(host, hosts[host])
	}
	for _, host := range PublicHosts {
		if _, ok := hosts[host]; !ok {
			write(host, closed)
		}
	}
	return os.WriteFile(c.Registries, []byte(reg.String()), 0o644)
}
