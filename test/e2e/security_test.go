//go:build e2e

package e2e

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCredentialIsolation (issue 4 item 9): the source and the mirror each sit behind a front
// that requires its own basic-auth credentials and records every Authorization header. The pod's
// pull secret (CRI AuthConfig, for the source) must never reach the mirror host; the mirror's
// credentials (the proxy's --auth-file) must never reach the source host. The proxy's manifest
// probe talks to the mirror too and is held to the same rule.
func TestCredentialIsolation(t *testing.T) {
	eachRuntime(t, func(t *testing.T, rt *criRuntime) {
		const (
			podUser  = "pod-user"
			podPass  = "pod-secret-Zq1"
			mirUser  = "mirror-user"
			mirPass  = "mirror-secret-Xk7"
			repoBoth = "e2e/auth-both" // on the mirror and the source (different images)
			repoSrc  = "e2e/auth-src"  // on the source only: the pull falls back to the source
		)
		onMirror := mustPushRandom(t, env.mirror.host+"/m1/"+repoBoth+":v1")
		mustPushRandom(t, env.source.host+"/"+repoBoth+":v1")
		onSource := mustPushRandom(t, env.source.host+"/"+repoSrc+":v1")

		src := newRegistryFront(t, env.source.host)
		src.user, src.pass = podUser, podPass
		mir := newRegistryFront(t, env.mirror.host)
		mir.user, mir.pass = mirUser, mirPass
		// The source, as the runtime and the rules name it: a name of its own, which containerd
		// reaches through certs.d; CRI-O sends a pull's credentials only to the host the
		// reference names (a name its registries.conf sends elsewhere gets none), so there the
		// source is named by its address.
		srcName := "auth-source.test"
		if !rt.credsToRelocatedHost {
			srcName = src.host
		}
		rt.allowHost(t, srcName, "http://"+src.host)
		rt.allowHost(t, mir.host, "http://"+mir.host)

		authFile := filepath.Join(t.TempDir(), "auth.json")
		authJSON := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, mir.host, base64.StdEncoding.EncodeToString([]byte(mirUser+":"+mirPass)))
		if err := os.WriteFile(authFile, []byte(authJSON), 0o600); err != nil {
			t.Fatal(err)
		}
		p := startProxyWith(t, registriesConf(rule{prefix: srcName, mirrors: []mirror{{location: mir.host + "/m1"}}}),
			proxyOpts{runtime: rt, args: []string{"--auth-file", authFile}})

		// kubelet sends the pull secret without a server address when the secret's registry
		// matched; an empty one is also what lets a leak show: containerd would send it anywhere.
		podAuth := &runtimeapi.AuthConfig{Username: podUser, Password: podPass}
		pull := func(ref string, auth *runtimeapi.AuthConfig) (string, error) {
			ctx, cancel := callCtx()
			defer cancel()
			resp, err := p.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}, Auth: auth})
			return resp.GetImageRef(), err
		}

		refBoth, refSrc := srcName+"/"+repoBoth+":v1", srcName+"/"+repoSrc+":v1"
		id, err := pull(refBoth, podAuth)
		if err != nil {
			t.Errorf("PullImage(%s) with the pod's secret: %s; want it served by the mirror with the mirror's credentials from --auth-file\nmirror front:\n%s", refBoth, grpcMessage(err), mir.dump(20))
		} else if id != rt.id(onMirror) {
			t.Errorf("PullImage(%s) = %s, want %s: the mirror (with the credentials of --auth-file) should serve it, not the source\nattempts:\n%s", refBoth, id, rt.id(onMirror), p.attemptLog())
		}
		id, err = pull(refSrc, podAuth)
		if err != nil {
			t.Errorf("PullImage(%s) with the pod's secret: %s; want it served by the source after the mirror's miss\nsource front:\n%s", refSrc, grpcMessage(err), src.dump(20))
		} else if want := rt.sourceAnswer(refSrc, onSource); id != want {
			t.Errorf("PullImage(%s) = %s, want %s (the source's image)", refSrc, id, want)
		}
		// The source really requires the secret: without it the same pull fails.
		if err := p.remove(refSrc); err != nil {
			t.Fatalf("RemoveImage(%s): %v", refSrc, err)
		}
		if _, err := pull(refSrc, nil); err == nil {
			t.Errorf("PullImage(%s) without the pod's secret succeeded; the source front should refuse it", refSrc)
		}

		// Both hosts were asked (with the right credentials), the probe included.
		mirReqs, srcReqs := mir.requests(), src.requests()
		var probeSeen, mirrorCredsAtMirror, podCredsAtSource bool
		for _, r := range mirReqs {
			if fromProbe(r.UserAgent) {
				probeSeen = true
			}
			if basicCreds(r.Auth) == mirUser+":"+mirPass {
				mirrorCredsAtMirror = true
			}
		}
		for _, r := range srcReqs {
			if basicCreds(r.Auth) == podUser+":"+podPass {
				podCredsAtSource = true
			}
		}
		if len(mirReqs) == 0 || len(srcReqs) == 0 {
			t.Errorf("the mirror front got %d requests and the source front %d; both should be asked", len(mirReqs), len(srcReqs))
		}
		if !probeSeen {
			t.Errorf("no request from the proxy's probe reached the mirror front; the test should cover it")
		}
		if !mirrorCredsAtMirror {
			t.Errorf("the mirror never received the mirror's credentials from --auth-file")
		}
		if !podCredsAtSource {
			t.Errorf("the source never received the pod's credentials")
		}

		// The leaks: any Authorization header carrying the other side's secret, in any form.
		for _, r := range mirReqs {
			if leaks(r.Auth, podUser, podPass) {
				t.Errorf("LEAK: the pod's pull secret reached the mirror host %s: %s", mir.host, r)
			}
		}
		for _, r := range srcReqs {
			if leaks(r.Auth, mirUser, mirPass) {
				t.Errorf("LEAK: the mirror's credentials reached the source host %s: %s", srcName, r)
			}
		}
		if t.Failed() {
			t.Logf("mirror front requests:\n%s\nsource front requests:\n%s", mir.dump(40), src.dump(40))
		}
		// The proxy's log must not carry either secret.
		log := readFile(p.logPath())
		for _, secret := range []string{podPass, mirPass, base64.StdEncoding.EncodeToString([]byte(podUser + ":" + podPass)), base64.StdEncoding.EncodeToString([]byte(mirUser + ":" + mirPass))} {
			if strings.Contains(log, secret) {
				t.Errorf("the proxy log (debug level) contains a secret %q", secret)
			}
		}
	})
}

// leaks reports whether an Authorization header carries user's password, plainly, in basic
// auth, or as a token that contains it.
func leaks(header, user, pass string) bool {
	if header == "" {
		return false
	}
	if strings.Contains(header, pass) {
		return true
	}
	if c := basicCreds(header); strings.Contains(c, pass) || c == user+":"+pass {
		return true
	}
	return false
}

// TestNeverContactSource (item 10): a rule with mirrors and blocked = true (what an
// ImageTagMirrorSet with mirrorSourcePolicy: NeverContactSource becomes), and a blocked rule
// without mirrors. The source front receives no request at all, even for an image only the
// source has; the errors name the rule.
func TestNeverContactSource(t *testing.T) {
	eachRuntime(t, func(t *testing.T, rt *criRuntime) {
		const never, blocked = "never.test", "blocked-rec.test"
		present := mustPushRandom(t, env.mirror.host+"/m1/e2e/never-present:v1")
		mustPushRandom(t, env.source.host+"/e2e/never-present:v1")
		absent := mustPushRandom(t, env.source.host+"/e2e/never-absent:v1") // only the source has it

		src := newRegistryFront(t, env.source.host)
		rt.allowHost(t, never, "http://"+src.host)
		rt.allowHost(t, blocked, "http://"+src.host)
		p := startProxyOn(t, rt, registriesConf(
			rule{prefix: never, blocked: true, mirrors: []mirror{{location: env.mirrorLoc("m1")}}},
			rule{prefix: blocked, blocked: true},
		))

		if n := src.count(func(frontRequest) bool { return true }); n != 0 {
			t.Fatalf("the source front got %d requests before the test", n)
		}

		ref := never + "/e2e/never-present:v1"
		p.mustPull(ref, present)
		checkNames(t, "ImageStatus", p.status(ref), []string{ref}, present.Digest)

		ref = never + "/e2e/never-absent:v1"
		_, err := p.pull(ref)
		if err == nil {
			t.Errorf("PullImage(%s) succeeded; the mirror lacks it and the source must never be contacted", ref)
		} else {
			msg := grpcMessage(err)
			t.Logf("PullImage(%s): %s", ref, msg)
			if !strings.Contains(msg, `"`+never+`"`) || !strings.Contains(strings.ToLower(msg), "blocked") {
				t.Errorf("PullImage(%s) error %q does not say the source is not contacted because rule prefix %q blocks it", ref, msg, never)
			}
		}

		ref = blocked + "/e2e/never-absent:v1"
		_, err = p.pull(ref)
		if err == nil {
			t.Errorf("PullImage(%s) succeeded; the registry is blocked", ref)
		} else {
			msg := grpcMessage(err)
			t.Logf("PullImage(%s): %s", ref, msg)
			if !strings.Contains(msg, `prefix "`+blocked+`"`) || !strings.Contains(msg, p.conf) {
				t.Errorf("PullImage(%s) error %q does not name the rule (prefix %q in %s)", ref, msg, blocked, p.conf)
			}
		}

		if n := src.count(func(frontRequest) bool { return true }); n != 0 {
			t.Errorf("the source registry received %d requests; a blocked source must receive none:\n%s", n, src.dump(20))
		}
		m := p.metrics()
		if n := m.Sum("cri_mirror_pull_attempts_total", map[string]string{"mirror": "source"}); n != 0 {
			t.Errorf("%v attempts against the source counted\n%s", n, m.Dump("cri_mirror_pull"))
		}
		if n := m.Sum("cri_mirror_pulls_total", map[string]string{"registry": blocked, "result": "blocked"}); n != 1 {
			t.Errorf(`cri_mirror_pulls_total{registry=%q,result="blocked"} = %v, want 1`+"\n%s", blocked, n, m.Dump("cri_mirror_pulls"))
		}

		// The zero above is not for want of a route: the runtime itself, asked without the
		// proxy, pulls the source-only image through the same front.
		ctx, cancel := callCtx()
		defer cancel()
		ref = never + "/e2e/never-absent:v1"
		resp, err := rt.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil {
			t.Fatalf("%s pulling %s itself: %v; the source route the test relies on does not work\n%s", rt.name, ref, err, src.dump(20))
		}
		if want := rt.sourceAnswer(ref, absent); resp.GetImageRef() != want {
			t.Errorf("%s pulling %s itself = %s, want the source's image %s", rt.name, ref, resp.GetImageRef(), want)
		}
		if n := src.count(func(r frontRequest) bool { return rt.fromRuntime(r.UserAgent) && manifestPath.MatchString(r.Path) }); n == 0 {
			t.Errorf("the source front saw no manifest request from %s's own pull\n%s", rt.name, src.dump(20))
		}
	})
}

// TestSocketAndListeners (item 11): the CRI socket is 0660 by default and takes --listen-mode;
// it is never world-accessible; the metrics listener defaults to loopback; the proxy listens on
// no TCP port but its metrics address.
func TestSocketAndListeners(t *testing.T) {
	conf := registriesConf(sourceRule("m1"))

	t.Run("default mode", func(t *testing.T) {
		p := startProxy(t, conf)
		p.t = t
		checkSocketMode(t, p.sock, 0o660)
		if fi, err := os.Stat(filepath.Dir(p.sock)); err == nil && fi.Mode().Perm()&0o002 != 0 {
			t.Errorf("the socket's directory %s is world-writable: %v", filepath.Dir(p.sock), fi.Mode())
		}

		listening, err := tcpListeners(p.proc.cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if len(listening) != 1 || listening[0] != p.metricsAddr {
			t.Errorf("the proxy listens on TCP %q; want only its metrics address %s", listening, p.metricsAddr)
		}
		// The CRI socket is a unix socket, not reachable over TCP: a CRI call on the metrics
		// port gets HTTP, not gRPC.
		if code, _, err := p.statusOf("/runtime.v1.ImageService/ListImages"); err == nil && code == http.StatusOK {
			t.Errorf("the metrics listener answers a CRI method path with 200")
		}
	})

	t.Run("--listen-mode 0600", func(t *testing.T) {
		p := startProxyWith(t, conf, proxyOpts{args: []string{"--listen-mode", "0600"}})
		p.t = t
		checkSocketMode(t, p.sock, 0o600)
	})

	t.Run("--listen-mode 0666 is refused", func(t *testing.T) {
		// "Never world-writable": a mode that lets any local user talk CRI (pull, remove
		// images, and through the relay run containers) is refused, not applied.
		dir, err := os.MkdirTemp("", "cmpw")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		confPath, sock := filepath.Join(dir, "registries.conf"), filepath.Join(dir, "cri.sock")
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		out, stderr, err := run(5*time.Second, "", nil, env.proxyBin, "serve",
			"--listen", "unix://"+sock, "--listen-mode", "0666", "--runtime-endpoint", "unix://"+env.ctd.sock,
			"--registries-conf", confPath, "--registries-conf-dir", dir, "--state-dir", dir, "--metrics-address", "")
		switch {
		case err != nil && strings.Contains(err.Error(), "timed out"):
			mode := "(gone)"
			if fi, serr := os.Lstat(sock); serr == nil {
				mode = fmt.Sprintf("%04o", fi.Mode().Perm())
			}
			t.Errorf("serve --listen-mode 0666 started and served on a world-writable socket (mode %s); want it refused\n%s%s", mode, out, stderr)
		case err == nil:
			t.Errorf("serve --listen-mode 0666 exited 0; want a refusal")
		case !strings.Contains(out+stderr, "listen-mode"):
			t.Errorf("serve --listen-mode 0666: %v, but the error does not name --listen-mode:\n%s%s", err, out, stderr)
		}
	})

	t.Run("metrics default is loopback", func(t *testing.T) {
		if env.proxyErr != nil {
			t.Fatalf("no cri-mirror-proxy binary: %v", env.proxyErr)
		}
		out, stderr, err := run(time.Minute, "", nil, env.proxyBin, "serve", "--help")
		if err != nil {
			t.Fatalf("serve --help: %v\n%s%s", err, out, stderr)
		}
		help := out + stderr
		def := flagDefault(help, "metrics-address")
		if def != `"127.0.0.1:9464"` {
			t.Errorf("serve --help: the default of --metrics-address is %s, want \"127.0.0.1:9464\" (loopback)\n%s", def, help)
		}
		if def := flagDefault(help, "listen-mode"); def != "0660" {
			t.Errorf("serve --help: the default of --listen-mode is %q, want 0660", def)
		}
		if def := flagDefault(help, "listen"); !strings.HasPrefix(def, `"unix://`) {
			t.Errorf("serve --help: the default of --listen is %s, want a unix:// socket", def)
		}
	})

	t.Run("--listen refuses tcp", func(t *testing.T) {
		dir := t.TempDir()
		confPath := filepath.Join(dir, "registries.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		out, stderr, err := run(30*time.Second, "", nil, env.proxyBin, "serve",
			"--listen", "tcp://127.0.0.1:0", "--runtime-endpoint", "unix://"+env.ctd.sock,
			"--registries-conf", confPath, "--registries-conf-dir", dir,
			"--state-dir", dir, "--metrics-address", "")
		if err == nil {
			t.Errorf("serve --listen tcp://127.0.0.1:0 started and exited 0; CRI must be served on a unix socket only\n%s%s", out, stderr)
		} else if !strings.Contains(out+stderr, "unix") {
			t.Errorf("serve --listen tcp://...: %v, output %q does not say only unix sockets are served", err, out+stderr)
		}
	})
}

func checkSocketMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("lstat %s: %v", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("%s is not a socket: %v", path, fi.Mode())
	}
	if fi.Mode().Perm() != want {
		t.Errorf("socket %s has mode %04o, want %04o", path, fi.Mode().Perm(), want)
	}
	if fi.Mode().Perm()&0o007 != 0 {
		t.Errorf("socket %s is accessible to others: %04o", path, fi.Mode().Perm())
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != uint32(os.Geteuid()) {
		t.Errorf("socket %s is owned by uid %d, want %d", path, st.Uid, os.Geteuid())
	}
}

// flagDefault returns what the Go flag package prints as "(default X)" for flag name.
func flagDefault(help, name string) string {
	lines := strings.Split(help, "\n")
	for i, line := range lines {
		f := strings.Fields(line)
		if len(f) == 0 || (f[0] != "-"+name && f[0] != "--"+name) {
			continue
		}
		for _, l := range lines[i:min(i+3, len(lines))] {
			if _, d, ok := strings.Cut(l, "(default "); ok {
				return strings.TrimSuffix(strings.TrimSpace(d), ")")
			}
		}
		return ""
	}
	return ""
}

// tcpListeners returns the addresses the process pid listens on over TCP (v4 and v6): the
// LISTEN sockets of /proc/net/tcp{,6} whose inode is one of the process's file descriptors.
func tcpListeners(pid int) ([]string, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, err
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err != nil {
			continue
		}
		if ino, ok := strings.CutPrefix(target, "socket:["); ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	var out []string
	for _, file := range []string{"tcp", "tcp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, file))
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] {
				continue
			}
			out = append(out, procAddr(fields[1]))
		}
		f.Close()
	}
	return out, nil
}

// procAddr turns /proc/net/tcp's "0100007F:24E8" into "127.0.0.1:9448" (IPv6 as hex).
func procAddr(s string) string {
	hexIP, hexPort, _ := strings.Cut(s, ":")
	port, _ := strconv.ParseUint(hexPort, 16, 16)
	if len(hexIP) == 8 {
		v, _ := strconv.ParseUint(hexIP, 16, 32)
		return fmt.Sprintf("%d.%d.%d.%d:%d", byte(v), byte(v>>8), byte(v>>16), byte(v>>24), port)
	}
	return fmt.Sprintf("[%s]:%d", hexIP, port)
}
