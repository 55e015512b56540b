package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRepository(t *testing.T) {
	for ref, want := range map[string]string{
		"source.test/e2e/x:v1":                  "source.test/e2e/x",
		"127.0.0.1:5000/mirror/x:v1":            "127.0.0.1:5000/mirror/x",
		"127.0.0.1:5000/mirror/x":               "127.0.0.1:5000/mirror/x",
		"docker.io/library/app@sha256:" + hex64: "docker.io/library/app",
	} {
		if got, err := Repository(ref); err != nil || got != want {
			t.Errorf("Repository(%q) = %q, %v; want %q", ref, got, err, want)
		}
	}
	if _, err := Repository("Not A Reference"); err == nil {
		t.Error("Repository of a bad reference: no error")
	}
}

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// WriteContainerd keeps a host configured before it and points every other public host at
// the closed URL.
func TestWriteContainerd(t *testing.T) {
	dir := t.TempDir()
	certs := ContainerdAt(dir).Certs
	if err := WriteMirrorHost(certs, "gcr.io", "http://127.0.0.1:5000", "/v2/mirror/gcr.io", "http://127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	c, err := WriteContainerd(dir, map[string]string{"127.0.0.1:5000": "http://127.0.0.1:5000"}, "http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	read := func(host string) string {
		b, err := os.ReadFile(filepath.Join(certs, host, "hosts.toml"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if s := read("gcr.io"); !strings.Contains(s, `[host."http://127.0.0.1:5000/v2/mirror/gcr.io"]`) || !strings.Contains(s, "override_path = true") {
		t.Errorf("gcr.io's mirror entry was not kept:\n%s", s)
	}
	if s := read("docker.io"); !strings.HasPrefix(s, `server = "http://127.0.0.1:1"`) {
		t.Errorf("docker.io is not at the closed URL:\n%s", s)
	}
	if s := read("127.0.0.1:5000"); !strings.HasPrefix(s, `server = "http://127.0.0.1:5000"`) {
		t.Errorf("the registry host:\n%s", s)
	}
	cfg, err := os.ReadFile(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`address = "` + c.Socket + `"`, `config_path = "` + certs + `"`} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("config.toml lacks %s:\n%s", want, cfg)
		}
	}
}
