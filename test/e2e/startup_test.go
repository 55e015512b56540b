//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestHUPDuringStartup (issue 15 item 7): a SIGHUP that arrives while the proxy is still
// starting (here: waiting for the lock of its alias database, which another process holds for a
// moment) neither kills it nor is lost: the proxy comes up and applies it as a reload.
func TestHUPDuringStartup(t *testing.T) {
	p := startProxy(t, registriesConf(sourceRule("m1")))
	if !p.stop() {
		t.Fatal("the proxy did not stop on SIGTERM")
	}

	// Hold the database lock the way a second proxy on the same state dir would.
	db := filepath.Join(p.stateDir, "aliases.db")
	f, err := os.OpenFile(db, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("locking %s: %v", db, err)
	}

	// While the proxy waits for the lock (it has the file open), send HUP, then let go of the
	// lock well within the proxy's 1s lock timeout.
	hupped := make(chan error, 1)
	go func() {
		defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		pid, err := waitForOpener(db, 20*time.Second)
		if err != nil {
			hupped <- err
			return
		}
		err = syscall.Kill(pid, syscall.SIGHUP)
		time.Sleep(200 * time.Millisecond)
		hupped <- err
	}()
	p.start() // fails the test unless the proxy serves
	if err := <-hupped; err != nil {
		t.Fatalf("no SIGHUP sent during start-up: %v", err)
	}
	if !p.proc.running() {
		t.Fatalf("the proxy exited: %s", p.proc.exitState())
	}
	// The HUP was not dropped: it is applied as a reload once the proxy serves.
	err = waitFor(10*time.Second, "the early SIGHUP to be applied as a reload", func() error {
		if n := p.metrics().Sum("cri_mirror_config_reloads_total", map[string]string{"result": "success"}); n != 1 {
			return fmt.Errorf("successful reloads = %v, want 1", n)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// waitForOpener returns the pid of the first process (other than this one) that has path open.
func waitForOpener(path string, timeout time.Duration) (int, error) {
	var pid int
	err := waitFor(timeout, "a process to open "+path, func() error {
		fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
		for _, fd := range fds {
			if target, err := os.Readlink(fd); err != nil || target != path {
				continue
			}
			n, err := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(fd))))
			if err == nil && n != os.Getpid() {
				pid = n
				return nil
			}
		}
		return fmt.Errorf("nobody has %s open", path)
	})
	return pid, err
}
