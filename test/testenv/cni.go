package testenv

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

// CNIPluginDir is where Debian's containernetworking-plugins (installed by test/tools.sh)
// puts the plugins.
const CNIPluginDir = "/usr/lib/cni"

// WriteCNI writes the pod network of a runtime under dir (its conf_dir): one network on a
// bridge of its own named bridge, addresses from subnet (host-local IPAM, its state under
// dir/ipam), and nothing that reaches beyond the machine: the bridge gets no address and
// no route, there is no masquerading and no default route in the pod. A pod gets an
// interface and an address, which runtimes require to start it, and talks to nobody. The
// caller deletes the bridge (ip link del) when done; the plugins do not.
func WriteCNI(dir, bridge, subnet string) error {
	if len(bridge) == 0 || len(bridge) > 15 {
		return fmt.Errorf("cni: bridge name %q: 1 to 15 characters", bridge)
	}
	prefix, err := netip.ParsePrefix(subnet)
	if err != nil {
		return fmt.Errorf("cni: subnet: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "ipam"), 0o755); err != nil {
		return err
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       bridge,
		"plugins": []any{map[string]any{
			"type":      "bridge",
			"bridge":    bridge,
			"isGateway": false,
			"ipMasq":    false,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": prefix.Masked().String()}}},
				"dataDir": filepath.Join(dir, "ipam"),
			},
		}},
	}
	data, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "10-"+bridge+".conflist"), append(data, '\n'), 0o644)
}
