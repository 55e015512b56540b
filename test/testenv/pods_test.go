package testenv

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// The CRI options land in containerd's config where containerd reads them; without them the
// config is WriteContainerd's.
func TestWriteContainerdCRI(t *testing.T) {
	type cri struct {
		DisableCgroup bool   `toml:"disable_cgroup"`
		SandboxImage  string `toml:"sandbox_image"`
		CNI           struct {
			ConfDir string `toml:"conf_dir"`
			BinDir  string `toml:"bin_dir"`
		} `toml:"cni"`
	}
	parse := func(path string) cri {
		t.Helper()
		var c struct {
			Plugins map[string]cri `toml:"plugins"`
		}
		if _, err := toml.DecodeFile(path, &c); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return c.Plugins["io.containerd.grpc.v1.cri"]
	}

	plain, err := WriteContainerd(t.TempDir(), nil, "http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if got := parse(plain.Config); !got.DisableCgroup || got.SandboxImage != "" || got.CNI.ConfDir != "" || got.CNI.BinDir != "" {
		t.Errorf("WriteContainerd: CRI settings %+v, want cgroups disabled and nothing else", got)
	}

	o := CRIOptions{SandboxImage: "127.0.0.1:5000/critest/pause:1", CNIConfDir: "/tmp/x/cni", CNIBinDir: CNIPluginDir, Cgroups: true}
	c, err := WriteContainerdCRI(t.TempDir(), nil, "http://127.0.0.1:1", o)
	if err != nil {
		t.Fatal(err)
	}
	got := parse(c.Config)
	if got.DisableCgroup || got.SandboxImage != o.SandboxImage || got.CNI.ConfDir != o.CNIConfDir || got.CNI.BinDir != o.CNIBinDir {
		t.Errorf("WriteContainerdCRI(%+v): CRI settings %+v", o, got)
	}
}

func TestWriteCNI(t *testing.T) {
	dir := t.TempDir()
	if err := WriteCNI(dir, "cmp-test", "10.77.3.9/24"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "10-cmp-test.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Name    string
		Plugins []struct {
			Type, Bridge      string
			IsGateway, IPMasq bool
			IPAM              struct {
				Type    string
				Ranges  [][]map[string]string
				DataDir string
			}
		}
	}
	if err := json.Unmarshal(data, &conf); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if len(conf.Plugins) != 1 {
		t.Fatalf("plugins: %s", data)
	}
	p := conf.Plugins[0]
	if conf.Name != "cmp-test" || p.Type != "bridge" || p.Bridge != "cmp-test" {
		t.Errorf("network %q, plugin %q on bridge %q", conf.Name, p.Type, p.Bridge)
	}
	// Nothing that reaches beyond the machine.
	if p.IsGateway || p.IPMasq {
		t.Errorf("isGateway %v, ipMasq %v: want neither", p.IsGateway, p.IPMasq)
	}
	if p.IPAM.Type != "host-local" || len(p.IPAM.Ranges) != 1 || p.IPAM.Ranges[0][0]["subnet"] != "10.77.3.0/24" || p.IPAM.DataDir != filepath.Join(dir, "ipam") {
		t.Errorf("ipam %+v", p.IPAM)
	}

	for _, bad := range [][2]string{{"", "10.0.0.0/24"}, {"a-bridge-name-too-long", "10.0.0.0/24"}, {"cmp", "10.0.0.0"}} {
		if err := WriteCNI(t.TempDir(), bad[0], bad[1]); err == nil {
			t.Errorf("WriteCNI(%q, %q): no error", bad[0], bad[1])
		}
	}
}

// The busybox layer is a root file system a runtime can run: the static binary, a hard link
// per applet, the users the specs name, a world-writable /tmp.
func TestBusyboxLayer(t *testing.T) {
	if _, err := os.Stat(BusyboxPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s: %v (Debian package busybox-static, installed by test/tools.sh)", BusyboxPath, err)
		}
		t.Skipf("no %s (Debian package busybox-static)", BusyboxPath)
	}
	img, err := Busybox(BusyboxPath, Arch, []string{"sh"})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cf.Config.Cmd, " ") != "sh" || !strings.Contains(strings.Join(cf.Config.Env, " "), "PATH=") || cf.Architecture != Arch {
		t.Errorf("config: cmd %q, env %q, arch %q", cf.Config.Cmd, cf.Config.Env, cf.Architecture)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	entries := map[string]*tar.Header{}
	files := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entries[h.Name] = h
		if strings.HasPrefix(h.Name, "etc/") {
			b, _ := io.ReadAll(tr)
			files[h.Name] = string(b)
		}
	}
	if h := entries["bin/busybox"]; h == nil || h.Typeflag != tar.TypeReg || h.Mode != 0o755 {
		t.Errorf("bin/busybox: %+v", h)
	}
	for _, applet := range []string{"sh", "sleep", "echo", "cat", "ls", "top", "touch", "hostname"} {
		if h := entries["bin/"+applet]; h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "bin/busybox" {
			t.Errorf("bin/%s: %+v, want a hard link to bin/busybox", applet, h)
		}
	}
	if h := entries["tmp/"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("tmp/: %+v, want mode 1777", h)
	}
	if !strings.Contains(files["etc/passwd"], "www-data:x:33:33:") || !strings.Contains(files["etc/group"], "users:x:100:") {
		t.Errorf("etc/passwd, etc/group: %q", files)
	}

	// A dynamically linked binary (Debian's /bin/sh, dash) could not run in the image.
	if _, err := BusyboxLayer("/bin/sh"); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("BusyboxLayer(/bin/sh): %v, want it refused as dynamically linked", err)
	}
}
