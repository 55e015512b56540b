package resolver

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestConfig(t *testing.T) {
	confPath, confDir := confFiles(t, `
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror.local:5000/hub"
insecure = true
[[registry.mirror]]
location = "cache.local/hub"
pull-from-mirror = "tag-only"

[[registry]]
prefix = "quay.io"
location = "quay.io"
blocked = true
`, map[string]string{"50-k8s.conf": `
[[registry]]
prefix = "registry.k8s.io"
location = "registry.k8s.io"
blocked = true
mirror-by-digest-only = true
[[registry.mirror]]
location = "mirror.local:5000/k8s"
`})
	r, err := New(confPath, confDir)
	if err != nil {
		t.Fatal(err)
	}
	dropIn := filepath.Join(confDir, "50-k8s.conf")
	want := Config{
		ConfPath: confPath,
		ConfDir:  confDir,
		DropIns:  []string{dropIn},
		Rules: []Rule{
			{Prefix: "docker.io", File: confPath, Location: "docker.io", Mirrors: []Mirror{
				{Location: "mirror.local:5000/hub", Insecure: true, PullFromMirror: "all"},
				{Location: "cache.local/hub", PullFromMirror: "tag-only"},
			}},
			{Prefix: "quay.io", File: confPath, Location: "quay.io", Blocked: true, Mirrors: []Mirror{}},
			{Prefix: "registry.k8s.io", File: dropIn, Location: "registry.k8s.io", Blocked: true, NeverContactSource: true,
				MirrorByDigestOnly: true, Mirrors: []Mirror{{Location: "mirror.local:5000/k8s", PullFromMirror: "digest-only"}}},
		},
	}
	got := r.Config()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Config() =\n%+v\nwant\n%+v", got, want)
	}

	// The copy is a snapshot: a reload does not change it, the next call
	// sees the new rules.
	writeFile(t, confPath, "")
	if err := os.Remove(dropIn); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if len(got.Rules) != 3 || len(got.DropIns) != 1 {
		t.Errorf("the earlier Config() changed after Reload: %+v", got)
	}
	if now := r.Config(); len(now.Rules) != 0 || len(now.DropIns) != 0 {
		t.Errorf("Config() after Reload = %+v, want no rules and no drop-ins", now)
	}
}

func TestConfigMainMissing(t *testing.T) {
	dir := t.TempDir()
	r := &Resolver{confPath: filepath.Join(dir, "registries.conf"), confDir: filepath.Join(dir, "d"), mainOptional: true}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if c := r.Config(); !c.ConfMissing || c.Rules == nil || c.DropIns == nil {
		t.Errorf("Config() = %+v, want ConfMissing and empty (not nil) lists", c)
	}
}
