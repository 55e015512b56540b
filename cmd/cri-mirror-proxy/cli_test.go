package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// Flags may follow the image argument, and "--" ends the flags.
func TestFlagsAfterArguments(t *testing.T) {
	file, dir := writeConf(t, cliRules)
	before, _, code := runCLI("resolve", "--registries-conf", file, "--registries-conf-dir", dir, "nginx:1.27")
	if code != 0 {
		t.Fatalf("flags first: exit %d", code)
	}
	after, errOut, code := runCLI("resolve", "nginx:1.27", "--registries-conf", file, "--registries-conf-dir="+dir)
	if code != 0 || after != before {
		t.Errorf("flags after IMAGE: exit %d, stdout %q (flags first: %q), stderr %q", code, after, before, errOut)
	}
	mixed, _, code := runCLI("resolve", "--registries-conf", file, "nginx:1.27", "--registries-conf-dir", dir)
	if code != 0 || mixed != before {
		t.Errorf("flags around IMAGE: exit %d, stdout %q", code, mixed)
	}
	// After "--" a dash is an argument: here a second one, which is too many.
	if _, errOut, code := runCLI("resolve", "--registries-conf", file, "--", "nginx:1.27", "--registries-conf-dir"); code != 2 || !strings.Contains(errOut, "got 2") {
		t.Errorf("resolve -- IMAGE --flag: exit %d, stderr %q; want 2 arguments refused", code, errOut)
	}
	if _, errOut, code := runCLI("resolve", "nginx:1.27", "busybox", "--registries-conf", file); code != 2 || !strings.Contains(errOut, "want 1 IMAGE, got 2") {
		t.Errorf("two images: exit %d, stderr %q", code, errOut)
	}
}

// Exit codes: 2 for bad input of any kind, 1 for a command that failed.
func TestExitCodes(t *testing.T) {
	file, dir := writeConf(t, cliRules)
	bad, badDir := writeConf(t, "[[registry]]\nprefix = \"x.io\"\nlocation = \"x.io\"\npull_from_mirror = \"all\"\n")
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"resolve", "--registries-conf", file, "--registries-conf-dir", dir, "nginx:1.27"}, 0},
		{[]string{"resolve", "--registries-conf", file, "--registries-conf-dir", dir, "Not/A:Valid:Ref"}, 2},
		{[]string{"resolve", "--registries-conf", bad, "--registries-conf-dir", badDir, "nginx"}, 2},
		{[]string{"resolve", "--registries-conf", "/nonexistent/registries.conf", "nginx"}, 2},
		{[]string{"resolve", "--registries-conf", file, "--registries-conf-dir", dir, "blocked.example.com/app:1"}, 1},
		{[]string{"resolve", "--registries-conf", file, "-o", "yaml", "nginx"}, 2},
		{[]string{"check-config", "--registries-conf", bad, "--registries-conf-dir", badDir}, 2},
		{[]string{"check-config", "--registries-conf", file, "--registries-conf-dir", dir, "--listen", "tcp://0.0.0.0:1"}, 2},
		{[]string{"check-config", "--registries-conf", file, "--registries-conf-dir", dir, "--log-level", "loud"}, 2},
		{[]string{"check-config", "--registries-conf", file, "--registries-conf-dir", dir, "extra"}, 2},
		{[]string{"status", "--metrics-address", ""}, 2},
		{[]string{"status", "--metrics-address", "no-port"}, 2},
		{[]string{"import"}, 2},
		{[]string{"import", filepath.Join(t.TempDir(), "missing.yaml")}, 1},
	} {
		if _, errOut, code := runCLI(tc.args...); code != tc.code {
			t.Errorf("%q: exit %d, want %d; stderr %q", tc.args, code, tc.code, errOut)
		}
	}
}

// serve refuses bad input before it touches anything. Each run has a
// canceled context, its own state dir and no metrics port, so a serve that
// wrongly went on would return at once without leaving anything behind.
func TestServeBadInput(t *testing.T) {
	file, dir := writeConf(t, cliRules)
	bad, badDir := writeConf(t, "[[registry]]\nprefix = \"x.io\"\nlocation = \"x.io\"\npull_from_mirror = \"all\"\n")
	tmp, err := os.MkdirTemp("", "cmp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	base := []string{"serve", "--state-dir", filepath.Join(tmp, "state"), "--metrics-address", "", "--listen", "unix://" + filepath.Join(tmp, "cri.sock")}
	for _, args := range [][]string{
		{"--registries-conf", file, "--registries-conf-dir", dir, "--runtime-endpoint", "tcp://127.0.0.1:1"},
		{"--registries-conf", file, "--registries-conf-dir", dir, "--listen", "relative/cri.sock"},
		{"--registries-conf", bad, "--registries-conf-dir", badDir},
		{"--registries-conf", file, "--registries-conf-dir", dir, "--listen-mode", "0666"},
	} {
		var out, errOut bytes.Buffer
		err := run(ctx, append(slices.Clone(base), args...), &out, &errOut)
		if code := exitCode(err, &errOut); code != 2 {
			t.Errorf("serve %q: exit %d, want 2; stderr %q", args, code, errOut.String())
		}
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("serve left %v behind after refusing its input", entries)
	}
}

func TestResolveJSON(t *testing.T) {
	file, dir := writeConf(t, cliRules)
	out, errOut, code := runCLI("resolve", "nginx:1.27", "-o", "json", "--registries-conf", file, "--registries-conf-dir", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep resolveReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if rep.Image != "docker.io/library/nginx:1.27" || rep.Rule != "docker.io" || len(rep.Candidates) != 3 {
		t.Fatalf("report %+v", rep)
	}
	first, last := rep.Candidates[0], rep.Candidates[2]
	if first.Ref != "127.0.0.1:5000/mirror/library/nginx:1.27" || first.Source || first.PullFromMirror != "tag-only" || !first.Insecure || first.Location != "127.0.0.1:5000/mirror" {
		t.Errorf("first candidate %+v", first)
	}
	if last.Ref != "docker.io/library/nginx:1.27" || !last.Source || last.PullFromMirror != "" {
		t.Errorf("last candidate %+v", last)
	}

	out, _, code = runCLI("resolve", "blocked.example.com/app:1", "-o", "json", "--registries-conf", file, "--registries-conf-dir", dir)
	rep = resolveReport{}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 {
		t.Fatalf("blocked: exit %d, %v\n%s", code, err, out)
	}
	if rep.Blocked == nil || rep.Blocked.Rule != "blocked.example.com" || rep.Blocked.File != file || rep.Blocked.Reason == "" || len(rep.Candidates) != 0 {
		t.Errorf("blocked report %+v (%+v)", rep, rep.Blocked)
	}
}

func TestCheckConfigJSON(t *testing.T) {
	file, dir := writeConf(t, cliRules)
	t.Setenv("CRI_MIRROR_PROXY_LOG_FORMAT", "json")
	out, errOut, code := runCLI("check-config", "-o", "json", "--registries-conf", file, "--registries-conf-dir", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep struct {
		Settings   []setting `json:"settings"`
		Registries struct {
			ConfPath string `json:"registries_conf"`
			Rules    []struct {
				Prefix  string `json:"prefix"`
				Blocked bool   `json:"blocked"`
				Mirrors []struct {
					Location string `json:"location"`
				} `json:"mirrors"`
			} `json:"rules"`
		} `json:"registries"`
		Warnings []string `json:"warnings"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	got := map[string]setting{}
	for _, s := range rep.Settings {
		got[s.Name] = s
	}
	if s := got["log-format"]; s.Value != "json" || s.Source != "CRI_MIRROR_PROXY_LOG_FORMAT" {
		t.Errorf("log-format setting %+v", s)
	}
	if s := got["registries-conf"]; s.Value != file || s.Source != "command line" {
		t.Errorf("registries-conf setting %+v", s)
	}
	if _, ok := got["o"]; ok {
		t.Error("-o is listed as a setting")
	}
	if rep.Registries.ConfPath != file || len(rep.Registries.Rules) != 2 || len(rep.Registries.Rules[1].Mirrors) != 2 ||
		rep.Registries.Rules[1].Mirrors[0].Location != "127.0.0.1:5000/mirror" || !rep.Registries.Rules[0].Blocked || rep.Warnings == nil {
		t.Errorf("registries %+v, warnings %v", rep.Registries, rep.Warnings)
	}

	// -o is for the command line only: the config file cannot set it.
	cfg := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(cfg, []byte("o = \"json\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := runCLI("check-config", "--config", cfg, "--registries-conf", file); code != 2 || !strings.Contains(errOut, `unknown setting "o"`) {
		t.Errorf("o in the config file: exit %d, %q", code, errOut)
	}
}

// JSON logs carry durations as seconds; text logs keep Go's form.
func TestLogDurations(t *testing.T) {
	for format, want := range map[string]string{
		"json": `"duration":1.5,`,
		"text": `duration=1.5s`,
	} {
		log, err := newLogger("info", format)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		log.SetOutput(&buf)
		entry := log.WithFields(logrus.Fields{"duration": 1500 * time.Millisecond, "image": "x"})
		entry.Info("pull done")
		if !strings.Contains(buf.String(), want) {
			t.Errorf("%s log %q lacks %q", format, buf.String(), want)
		}
		// The entry's own fields are left alone for the next line.
		if d, ok := entry.Data["duration"].(time.Duration); !ok || d != 1500*time.Millisecond {
			t.Errorf("%s: entry field changed to %v", format, entry.Data["duration"])
		}
	}
}

// serve binds the metrics port before it says it serves: a taken port ends
// the start with an error naming it, before READY=1 goes to systemd and
// before the CRI socket exists.
func TestServeMetricsPortTaken(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir, err := os.MkdirTemp("", "cmp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	t.Setenv("NOTIFY_SOCKET", filepath.Join(dir, "notify"))
	file, confDir := writeConf(t, cliRules)
	sock := filepath.Join(dir, "cri.sock")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, errOut, code := func() (string, string, int) {
		var out, errOut bytes.Buffer
		err := run(ctx, []string{"serve", "--listen", "unix://" + sock, "--runtime-endpoint", "unix://" + filepath.Join(dir, "none.sock"),
			"--registries-conf", file, "--registries-conf-dir", confDir, "--state-dir", filepath.Join(dir, "state"),
			"--metrics-address", busy.Addr().String(), "--log-level", "error"}, &out, &errOut)
		code := exitCode(err, &errOut)
		return out.String(), errOut.String(), code
	}()
	if ctx.Err() != nil {
		t.Fatal("serve did not return on a taken metrics port")
	}
	if code != 1 || !strings.Contains(errOut, busy.Addr().String()) {
		t.Errorf("exit %d, stderr %q; want 1 and an error naming %s", code, errOut, busy.Addr())
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the CRI socket exists after a failed start (stat: %v)", err)
	}
	_ = notify.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	buf := make([]byte, 256)
	if n, _, err := notify.ReadFrom(buf); err == nil {
		t.Errorf("systemd was told %q before the start failed", buf[:n])
	}
}

func TestStatusURL(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:9464": "http://127.0.0.1:9464/status",
		":9464":          "http://127.0.0.1:9464/status",
		"0.0.0.0:9464":   "http://127.0.0.1:9464/status",
		"[::]:9464":      "http://[::1]:9464/status",
		"node1:9464":     "http://node1:9464/status",
	} {
		if got, err := statusURL(addr); err != nil || got != want {
			t.Errorf("statusURL(%q) = %q, %v; want %q", addr, got, err, want)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for remote, want := range map[string]bool{
		"127.0.0.1:40000": true, "[::1]:40000": true, "10.0.0.5:40000": false, "[fe80::1]:1": false, "garbage": false,
	} {
		if got := isLoopback(remote); got != want {
			t.Errorf("isLoopback(%q) = %v", remote, got)
		}
	}
}
