package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTagCheckConfig: the [tag-check] table of the config file, the flag
// and the environment give the same policy; check-config and resolve show
// it; a bad value is an error naming the file and the key.
func TestTagCheckConfig(t *testing.T) {
	file, dir := writeConf(t, cliRules)
	cfg := filepath.Join(t.TempDir(), "config.toml")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("[tag-check]\n\"docker.io\" = \"source-required\"\n\"docker.io/team\" = \"off\"\n")
	out, errOut, code := runCLI("check-config", "--config", cfg, "--registries-conf", file, "--registries-conf-dir", dir)
	if code != 0 {
		t.Fatalf("check-config: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"docker.io=source-required,docker.io/team=off", // the setting, with its source
		cfg,
		`rule "docker.io": tags under it are checked source-required`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, out)
		}
	}

	out, _, code = runCLI("check-config", "-o", "json", "--config", cfg, "--registries-conf", file, "--registries-conf-dir", dir)
	var rep struct {
		TagCheck []struct{ Prefix, Mode string } `json:"tag_check"`
	}
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil || len(rep.TagCheck) != 2 || rep.TagCheck[0].Mode != "source-required" {
		t.Errorf("check-config -o json: exit %d, %v, tag_check %+v", code, err, rep.TagCheck)
	}

	_, errOut, code = runCLI("resolve", "--config", cfg, "--registries-conf", file, "--registries-conf-dir", dir, "nginx:1.27")
	if code != 0 || !strings.Contains(errOut, `tag check: source-required (prefix "docker.io")`) || !strings.Contains(errOut, "the pull fails") {
		t.Errorf("resolve of a tag: exit %d, notes:\n%s", code, errOut)
	}
	_, errOut, _ = runCLI("resolve", "--config", cfg, "--registries-conf", file, "--registries-conf-dir", dir, "docker.io/team/app:v1")
	if !strings.Contains(errOut, `tag check: off (prefix "docker.io/team")`) {
		t.Errorf("resolve under an off prefix: notes:\n%s", errOut)
	}

	// The flag wins over the file, in the same form.
	out, errOut, code = runCLI("check-config", "--config", cfg, "--registries-conf", file, "--registries-conf-dir", dir, "--tag-check", "docker.io=source-if-reachable")
	if code != 0 || !strings.Contains(out, `tags under it are checked source-if-reachable`) {
		t.Errorf("--tag-check: exit %d %s\n%s", code, errOut, out)
	}
	t.Setenv("CRI_MIRROR_PROXY_TAG_CHECK", "docker.io=bogus")
	if _, errOut, code := runCLI("check-config", "--registries-conf", file, "--registries-conf-dir", dir); code == 0 || !strings.Contains(errOut, "CRI_MIRROR_PROXY_TAG_CHECK") || !strings.Contains(errOut, `"bogus"`) {
		t.Errorf("a bad environment value: exit %d: %s", code, errOut)
	}
	os.Unsetenv("CRI_MIRROR_PROXY_TAG_CHECK")

	for body, want := range map[string]string{
		"[tag-check]\n\"docker.io\" = \"strict\"\n": `tag-check: prefix "docker.io": "strict" is not off`,
		"[tag-check]\n\"docker.io\" = true\n":       `[tag-check] "docker.io": want one of`,
		"[probe]\nx = 1\n":                          "probe: want a string, boolean or integer, got a table",
	} {
		write(body)
		_, errOut, code := runCLI("check-config", "--config", cfg, "--registries-conf", file, "--registries-conf-dir", dir)
		if code == 0 || !strings.Contains(errOut, cfg) || !strings.Contains(errOut, want) {
			t.Errorf("config %q: exit %d, error %q; want one naming %s and %q", body, code, errOut, cfg, want)
		}
	}
}
