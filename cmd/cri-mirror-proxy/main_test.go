package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

func writeConf(t *testing.T, body string) (file, dir string) {
	t.Helper()
	d := t.TempDir()
	file = filepath.Join(d, "registries.conf")
	if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return file, filepath.Join(d, "registries.conf.d")
}

func runCLI(args ...string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	code = exitCode(err, &errOut)
	return out.String(), errOut.String(), code
}

const cliRules = `
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "127.0.0.1:5000/mirror"
insecure = true
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "quay.example.com/hub"

[[registry]]
prefix = "blocked.example.com"
location = "blocked.example.com"
blocked = true
`

func TestResolve(t *testing.T) {
	file, dir := writeConf(t, cliRules)
	out, errOut, code := runCLI("resolve", "--registries-conf", file, "--registries-conf-dir", dir, "nginx:1.27")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{
		"127.0.0.1:5000/mirror/library/nginx:1.27\tmirror\trule=docker.io\tpull-from-mirror=tag-only\tinsecure",
		"quay.example.com/hub/library/nginx:1.27\tmirror\trule=docker.io\tpull-from-mirror=all",
		"docker.io/library/nginx:1.27\tsource\trule=docker.io",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("resolve output:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}

	// A digest skips the tag-only mirror.
	out, _, _ = runCLI("resolve", "--registries-conf", file, "--registries-conf-dir", dir, "nginx@sha256:"+strings.Repeat("c", 64))
	if strings.Contains(out, "127.0.0.1:5000") || !strings.HasPrefix(out, "quay.example.com/hub/library/nginx@sha256:") {
		t.Errorf("digest resolve output:\n%s", out)
	}
}

func TestResolveRefuses(t *testing.T) {
	file, dir := writeConf(t, cliRules)
	for _, tc := range []struct{ image, msg string }{
		{"blocked.example.com/app:1", `blocked by`},
		{"Not/Valid", "invalid image reference"},
	} {
		out, errOut, code := runCLI("resolve", "--registries-conf", file, "--registries-conf-dir", dir, tc.image)
		if code == 0 || out != "" || !strings.Contains(errOut, tc.msg) {
			t.Errorf("resolve %s: exit %d, stdout %q, stderr %q; want non-zero exit mentioning %q", tc.image, code, out, errOut, tc.msg)
		}
	}
	if _, _, code := runCLI("resolve", "--registries-conf", file); code != 2 {
		t.Errorf("resolve without IMAGE: exit %d, want 2", code)
	}
}

func TestCheckConfig(t *testing.T) {
	good, dir := writeConf(t, cliRules)
	out, errOut, code := runCLI("check-config", "--registries-conf", good, "--registries-conf-dir", dir)
	if code != 0 || !strings.Contains(out, "docker.io") || !strings.Contains(out, "127.0.0.1:5000/mirror") {
		t.Errorf("valid file: exit %d, out %q, err %q", code, out, errOut)
	}

	for name, body := range map[string]string{
		"syntax":      "[[registry]]\nprefix = \"docker.io\"\nlocation = \n",
		"unknown key": "[[registry]]\nprefix = \"docker.io\"\n[[registry.mirror]]\nlocation = \"m.example.com\"\npull_from_mirror = \"tag-only\"\n",
		"bad policy":  "[[registry]]\nprefix = \"docker.io\"\n[[registry.mirror]]\nlocation = \"m.example.com\"\npull-from-mirror = \"sometimes\"\n",
	} {
		bad, dir := writeConf(t, body)
		_, errOut, code := runCLI("check-config", "--registries-conf", bad, "--registries-conf-dir", dir)
		if code == 0 || !strings.Contains(errOut, bad) {
			t.Errorf("%s: exit %d, stderr %q; want non-zero naming %s", name, code, errOut, bad)
		}
	}
	if _, errOut, code := runCLI("check-config", "--registries-conf", "/nonexistent/registries.conf"); code == 0 {
		t.Errorf("missing explicit file accepted: %s", errOut)
	}
}

func TestUsage(t *testing.T) {
	if _, _, code := runCLI(); code != 2 {
		t.Errorf("no command: exit %d", code)
	}
	if _, _, code := runCLI("frobnicate"); code != 2 {
		t.Errorf("unknown command: exit %d", code)
	}
	if out, _, code := runCLI("version"); code != 0 || !strings.HasPrefix(out, "cri-mirror-proxy ") {
		t.Errorf("version: %d %q", code, out)
	}
	// Help goes to stdout and lists the command's own flags only.
	for cmd, flags := range map[string]struct{ has, hasNot []string }{
		"serve":        {has: []string{"-registries-conf", "-listen", "-metrics-address", "-log-format"}, hasNot: []string{"-o "}},
		"check-config": {has: []string{"-registries-conf", "-listen", "-o "}},
		"resolve":      {has: []string{"-registries-conf", "-registries-conf-dir", "-config", "-o "}, hasNot: []string{"-listen", "-metrics-address", "-state-dir", "-log-level"}},
		"status":       {has: []string{"-metrics-address", "-config", "-o "}, hasNot: []string{"-registries-conf", "-listen", "-state-dir"}},
	} {
		out, errOut, code := runCLI(cmd, "--help")
		if code != 0 || errOut != "" || !strings.HasPrefix(out, "Usage: cri-mirror-proxy "+cmd) {
			t.Errorf("%s --help: exit %d, stdout %q, stderr %q; want usage on stdout only", cmd, code, out, errOut)
		}
		for _, f := range flags.has {
			if !strings.Contains(out, "  "+f) {
				t.Errorf("%s --help lacks %s:\n%s", cmd, f, out)
			}
		}
		for _, f := range flags.hasNot {
			if strings.Contains(out, "  "+f) {
				t.Errorf("%s --help lists %s, which it does not use:\n%s", cmd, f, out)
			}
		}
	}
	// A usage error goes to stderr, with exit code 2.
	if out, errOut, code := runCLI("resolve", "--bogus", "nginx"); code != 2 || out != "" || !strings.Contains(errOut, "Usage: cri-mirror-proxy resolve") || !strings.Contains(errOut, "bogus") {
		t.Errorf("resolve --bogus: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, errOut, code := runCLI("serve", "--log-format", "xml", "--registries-conf", "/nonexistent"); code != 2 || !strings.Contains(errOut, "log-format") {
		t.Errorf("bad log format: exit %d, %q", code, errOut)
	}
}

func TestConfigFile(t *testing.T) {
	rules, dir := writeConf(t, cliRules)
	cfg := filepath.Join(t.TempDir(), "config.toml")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("registries-conf = \"" + rules + "\"\nregistries-conf-dir = \"" + dir + "\"\nprobe-timeout = \"5s\"\nlisten-mode = \"0600\"\nprobe = false\n")

	out, errOut, code := runCLI("check-config", "--config", cfg)
	if code != 0 {
		t.Fatalf("check-config: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"probe-timeout        5s", "(" + cfg + ")", "listen-mode          0600", "rule(s)", "127.0.0.1:5000/mirror",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, out)
		}
	}

	for body, msg := range map[string]string{
		"probe-timout = \"5s\"\n":    `unknown setting "probe-timout"`,
		"probe-timeout = \"soon\"\n": "probe-timeout",
		"listen-mode = \"0999\"\n":   "octal",
		"probe = [1]\n":              "want a string",
		"probe = \n":                 cfg,
	} {
		write(body)
		_, errOut, code := runCLI("check-config", "--config", cfg)
		if code == 0 || !strings.Contains(errOut, msg) || !strings.Contains(errOut, cfg) {
			t.Errorf("config %q: exit %d, stderr %q; want an error naming the file and %q", body, code, errOut, msg)
		}
	}
	if _, errOut, code := runCLI("check-config", "--config", "/nonexistent/config.toml"); code == 0 {
		t.Errorf("a missing explicit config file was accepted: %s", errOut)
	}
	write("registries-conf = \"" + rules + "\"\nregistries-conf-dir = \"" + dir + "\"\nprobe-timeout = \"5s\"\n")
	// The environment overrides the file, the command line both.
	t.Setenv("CRI_MIRROR_PROXY_PROBE_TIMEOUT", "7s")
	out, _, _ = runCLI("check-config", "--config="+cfg)
	if !strings.Contains(out, "probe-timeout        7s") || !strings.Contains(out, "CRI_MIRROR_PROXY_PROBE_TIMEOUT") {
		t.Errorf("env did not override the file:\n%s", out)
	}
	out, _, _ = runCLI("check-config", "--config", cfg, "--probe-timeout", "9s")
	if !strings.Contains(out, "probe-timeout        9s") || !strings.Contains(out, "(command line)") {
		t.Errorf("flag did not override env and file:\n%s", out)
	}

	// resolve reads the rules named in the file.
	out, errOut, code = runCLI("resolve", "--config", cfg, "nginx:1.27")
	if code != 0 || !strings.HasPrefix(out, "127.0.0.1:5000/mirror/library/nginx:1.27") {
		t.Errorf("resolve with config file: exit %d, %q, %q", code, out, errOut)
	}

}

// TestBlockedRewrittenLocationExplained: a blocked rule whose location is
// elsewhere still pulls from that location; resolve says so and check-config
// warns about it.
func TestBlockedRewrittenLocationExplained(t *testing.T) {
	file, dir := writeConf(t, `
[[registry]]
prefix = "old.example.com"
location = "new.example.com/old"
blocked = true
`)
	out, errOut, code := runCLI("resolve", "--registries-conf", file, "--registries-conf-dir", dir, "old.example.com/app:1")
	if code != 0 || out != "new.example.com/old/app:1\tsource\trule=old.example.com\n" ||
		!strings.Contains(errOut, "note: rule prefix \"old.example.com\" has blocked = true, but its location \"new.example.com/old\" is not blocked") {
		t.Errorf("resolve: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, errOut, code = runCLI("check-config", "--registries-conf", file, "--registries-conf-dir", dir)
	if code != 0 || !strings.Contains(out, "warning: rule prefix \"old.example.com\" in "+file+": blocked = true with location \"new.example.com/old\"") {
		t.Errorf("check-config: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestResolveShortNames: resolve says which alias or search registry a short
// name took, and --short-name-mode decides an ambiguous one.
func TestResolveShortNames(t *testing.T) {
	file, dir := writeConf(t, `unqualified-search-registries = ["quay.io", "docker.io"]
short-name-mode = "permissive"
[aliases]
"tools" = "registry.example.com/ops/tools"
`)
	out, errOut, code := runCLI("resolve", "--registries-conf", file, "--registries-conf-dir", dir, "tools:1")
	if code != 0 || out != "registry.example.com/ops/tools:1\tsource\tno matching rule\n" || !strings.Contains(errOut, `note: short name "tools:1": Resolved "tools" as an alias (`+file+`)`) {
		t.Errorf("alias: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, errOut, code = runCLI("resolve", "--registries-conf", file, "--registries-conf-dir", dir, "-o", "json", "tools:1")
	if code != 0 || !strings.Contains(out, `"image": "docker.io/library/tools:1",`) || !strings.Contains(out, `"ref": "registry.example.com/ops/tools:1",
      "image": "registry.example.com/ops/tools:1",`) || !strings.Contains(out, `Resolved \"tools\" as an alias`) {
		t.Errorf("alias, json: exit %d, stdout %s, stderr %q", code, out, errOut)
	}
	out, errOut, code = runCLI("resolve", "--registries-conf", file, "--registries-conf-dir", dir, "app")
	if code == 0 || out != "" || !strings.Contains(errOut, "short name mode is enforcing and the name is ambiguous: quay.io/app:latest, docker.io/library/app:latest") {
		t.Errorf("ambiguous, enforcing: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, errOut, code = runCLI("resolve", "--registries-conf", file, "--registries-conf-dir", dir, "--short-name-mode", "disabled", "app")
	if code != 0 || out != "quay.io/app:latest\tsource\tno matching rule\ndocker.io/library/app:latest\tsource\tno matching rule\n" ||
		!strings.Contains(errOut, `note: short name "app": Resolving "app" using unqualified-search registries (`+file+`)`) {
		t.Errorf("ambiguous, disabled: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, errOut, code = runCLI("check-config", "--registries-conf", file, "--registries-conf-dir", dir)
	if code != 0 || !strings.Contains(out, "unqualified-search-registries: quay.io, docker.io") ||
		!strings.Contains(out, "warning: short-name-mode in "+file+" is not used: as in CRI-O (its short_name_mode), --short-name-mode decides (enforcing)") {
		t.Errorf("check-config: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, errOut, code := runCLI("resolve", "--registries-conf", file, "--short-name-mode", "sometimes", "app"); code == 0 || !strings.Contains(errOut, `short-name mode "sometimes"`) {
		t.Errorf("bad --short-name-mode: exit %d, stderr %q", code, errOut)
	}
}

func TestWarnExposedAuthFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{{0o600, false}, {0o400, false}, {0o640, true}, {0o644, true}, {0o606, true}} {
		path := filepath.Join(dir, "auth.json")
		if err := os.WriteFile(path, []byte(`{"auths":{}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		log, hook := logtest.NewNullLogger()
		warnExposedAuthFile(path, log)
		e := hook.LastEntry()
		if got := e != nil && e.Level == logrus.WarnLevel && e.Data["auth_file"] == path; got != tc.warn {
			t.Errorf("mode %04o: warned = %v, want %v (%v)", tc.mode, got, tc.warn, hook.AllEntries())
		}
	}
	log, hook := logtest.NewNullLogger()
	warnExposedAuthFile(filepath.Join(dir, "missing.json"), log)
	warnExposedAuthFile("", log)
	if len(hook.AllEntries()) != 0 {
		t.Errorf("warned about a missing or unset auth file: %v", hook.AllEntries())
	}
}

// TestSampleHeap: allocations are sampled for the heap profile only when
// /debug/pprof/ is served to read it.
func TestSampleHeap(t *testing.T) {
	defer sampleHeap(true)
	sampleHeap(false)
	if runtime.MemProfileRate != 0 {
		t.Errorf("without --pprof: MemProfileRate = %d, want 0", runtime.MemProfileRate)
	}
	sampleHeap(true)
	if runtime.MemProfileRate != 512*1024 {
		t.Errorf("with --pprof: MemProfileRate = %d, want the runtime's default 512 KiB", runtime.MemProfileRate)
	}
}

// TestProcs: --procs sets how many threads run Go code, 1 unless said
// otherwise or GOMAXPROCS is in the environment, and a negative or
// non-numeric value is refused with the flag's name.
func TestProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	file, dir := writeConf(t, cliRules)
	conf := []string{"--registries-conf", file, "--registries-conf-dir", dir}
	for _, tc := range []struct {
		args []string
		env  string // GOMAXPROCS, "" unset
		want int
	}{
		{nil, "", 1},
		{[]string{"--procs", "3"}, "", 3},
		{nil, "2", 0},
		{[]string{"--procs", "1"}, "2", 1},
	} {
		t.Setenv("GOMAXPROCS", tc.env) // restored when the test ends
		if tc.env == "" {
			os.Unsetenv("GOMAXPROCS")
		}
		c, err := parseServe("serve", append(slices.Clone(conf), tc.args...), io.Discard, io.Discard)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if c.procs != tc.want {
			t.Errorf("%q with GOMAXPROCS=%q: procs %d, want %d", tc.args, tc.env, c.procs, tc.want)
		}
	}
	runtime.GOMAXPROCS(4)
	setProcs(0)
	if n := runtime.GOMAXPROCS(0); n != 4 {
		t.Errorf("--procs 0 changed GOMAXPROCS to %d", n)
	}
	setProcs(1)
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("--procs 1: GOMAXPROCS %d", n)
	}
	for _, bad := range []string{"-1", "two"} {
		var errOut bytes.Buffer
		_, err := parseServe("serve", append(slices.Clone(conf), "--procs", bad), io.Discard, &errOut)
		if err == nil || !strings.Contains(errOut.String()+err.Error(), "procs") {
			t.Errorf("--procs %s: err %v, stderr %q; want a refusal naming --procs", bad, err, errOut.String())
		}
	}
}
