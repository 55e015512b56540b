//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAliasStoreLost (issue 15 item 1): the alias database is damaged the way a torn write
// leaves it, or the state directory is wiped. The proxy starts anyway (no panic, no crash
// loop), keeps the damaged file aside, counts and logs it, and rebuilds the alias from the
// image containerd holds under the mirror's name, so the original name answers again.
func TestAliasStoreLost(t *testing.T) {
	cleanImages(t)
	cases := []struct {
		name    string
		lose    func(t *testing.T, stateDir string)
		damaged bool
	}{
		{"torn write", func(t *testing.T, stateDir string) {
			db := filepath.Join(stateDir, "aliases.db")
			b, err := os.ReadFile(db)
			if err != nil {
				t.Fatal(err)
			}
			// Garble everything after the two meta pages, as a write cut short would.
			for i := 2 * os.Getpagesize(); i < len(b); i++ {
				b[i] = byte(i*7 + 3)
			}
			if err := os.WriteFile(db, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"state dir wiped", func(t *testing.T, stateDir string) {
			if err := os.RemoveAll(stateDir); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			repo := fmt.Sprintf("e2e/lost-%d", i)
			want := mustPushRandom(t, env.mirror.host+"/m1/"+repo+":v1")
			p := startProxy(t, registriesConf(sourceRule("m1")))
			p.t = t
			ref := sourceHost + "/" + repo + ":v1"
			p.mustPull(ref, want)
			if !p.stop() {
				t.Fatal("the proxy did not stop on SIGTERM")
			}
			tc.lose(t, p.stateDir)

			p.start() // fails the test unless it serves
			moved, _ := filepath.Glob(filepath.Join(p.stateDir, "aliases.db.damaged-*"))
			m := p.metrics()
			if tc.damaged {
				if len(moved) != 1 {
					t.Errorf("damaged files kept aside: %q, want one", moved)
				}
				if n := m.Sum("cri_mirror_alias_store_recoveries_total", nil); n != 1 {
					t.Errorf("cri_mirror_alias_store_recoveries_total = %v, want 1", n)
				}
				if !hasLogLine(readFile(p.logPath()), "level=error", "damaged", "moved_to=") {
					t.Errorf("no error logged for the damaged database; log tail:\n%s", logTail(p.logPath(), 20))
				}
			} else if len(moved) != 0 || m.Sum("cri_mirror_alias_store_recoveries_total", nil) != 0 {
				t.Errorf("a wiped state dir counted as damaged (files aside: %q)", moved)
			}
			err := waitFor(30*time.Second, "the alias to be rebuilt from the runtime", func() error {
				img := p.status(ref)
				if img == nil || img.GetId() != want.ID {
					return fmt.Errorf("ImageStatus(%s) = %v", ref, img)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			checkNames(t, "ImageStatus after the rebuild", p.status(ref), []string{ref}, want.Digest)
			if n := p.metrics().Sum("cri_mirror_aliases_rebuilt_total", map[string]string{"result": "restored"}); n < 1 {
				t.Errorf("cri_mirror_aliases_rebuilt_total{result=restored} = %v, want >= 1", n)
			}
			// The new database works: the alias survives a restart.
			p.restart()
			checkNames(t, "ImageStatus after a restart", p.status(ref), []string{ref}, want.Digest)
		})
	}
}

// TestReadOnlyStateDir (issue 15 item 1): the state directory is mounted read-only. The proxy
// serves anyway, with the aliases it could read, records new ones in memory, and says so in the
// log and in cri_mirror_alias_store_persistent.
func TestReadOnlyStateDir(t *testing.T) {
	cleanImages(t)
	before := mustPushRandom(t, env.mirror.host+"/m1/e2e/ro-before:v1")
	after := mustPushRandom(t, env.mirror.host+"/m1/e2e/ro-after:v1")
	p := startProxy(t, registriesConf(sourceRule("m1")))
	beforeRef, afterRef := sourceHost+"/e2e/ro-before:v1", sourceHost+"/e2e/ro-after:v1"
	p.mustPull(beforeRef, before)
	if n := p.metrics().Sum("cri_mirror_alias_store_persistent", nil); n != 1 {
		t.Errorf("cri_mirror_alias_store_persistent = %v on a writable state dir, want 1", n)
	}
	if !p.stop() {
		t.Fatal("the proxy did not stop on SIGTERM")
	}

	for _, args := range [][]string{{"--bind", p.stateDir, p.stateDir}, {"-o", "remount,ro,bind", p.stateDir}} {
		if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
			t.Fatalf("mount %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", p.stateDir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", p.stateDir, err, out)
		}
	})

	p.start() // fails the test unless it serves
	if n := p.metrics().Sum("cri_mirror_alias_store_persistent", nil); n != 0 {
		t.Errorf("cri_mirror_alias_store_persistent = %v on a read-only state dir, want 0", n)
	}
	if !hasLogLine(readFile(p.logPath()), "level=error", "cannot be written", "memory only") {
		t.Errorf("no error logged for the read-only state dir; log tail:\n%s", logTail(p.logPath(), 20))
	}
	checkNames(t, "ImageStatus of an alias read from the read-only file", p.status(beforeRef), []string{beforeRef}, before.Digest)
	p.mustPull(afterRef, after)
	checkNames(t, "ImageStatus of an alias kept in memory", p.status(afterRef), []string{afterRef}, after.Digest)
}

// TestAliasesFollowRemovals (issue 15 item 9): images removed behind the proxy's back (straight
// at the runtime) lose their aliases once a listing through the proxy no longer shows them, and
// cri_mirror_aliases shrinks with them.
func TestAliasesFollowRemovals(t *testing.T) {
	eachRuntime(t, func(t *testing.T, rt *criRuntime) {
		keep := mustPushRandom(t, env.mirror.host+"/m1/e2e/prune-keep:v1")
		gone := mustPushRandom(t, env.mirror.host+"/m1/e2e/prune-gone:v1")
		p := startProxyOn(t, rt, registriesConf(sourceRule("m1")))
		keepRef, goneRef := sourceHost+"/e2e/prune-keep:v1", sourceHost+"/e2e/prune-gone:v1"
		p.mustPull(keepRef, keep)
		p.mustPull(goneRef, gone)
		if n := p.metrics().Sum("cri_mirror_aliases", nil); n != 2 {
			t.Fatalf("cri_mirror_aliases = %v after two mirror pulls, want 2", n)
		}

		rt.remove(t, rt.id(gone))
		p.mustCrictl("images") // kubelet lists images every few minutes; crictl does the same
		err := waitFor(10*time.Second, "cri_mirror_aliases to drop to 1", func() error {
			if n := p.metrics().Sum("cri_mirror_aliases", nil); n != 1 {
				return fmt.Errorf("cri_mirror_aliases = %v", n)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		checkNames(t, "ImageStatus of the image still there", p.status(keepRef), []string{keepRef}, keep.Digest)
	})
}
