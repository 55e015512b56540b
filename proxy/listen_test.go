package proxy

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/fakecri"
)

func TestListen(t *testing.T) {
	sock := filepath.Join(fakecri.ShortSocket(t, "sub"), "cri.sock") // parent does not exist yet
	l, err := Listen("unix://"+sock, 0o660, -1)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode = %v, want a socket with 0660", fi.Mode())
	}

	// A live socket is never taken over.
	go func(l net.Listener) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}(l)
	if _, err := Listen("unix://"+sock, 0o660, -1); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("second Listen on a live socket: %v", err)
	}
	l.Close()

	// A stale socket (its server died without removing it) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	l, err = Listen("unix://"+sock, 0o600, -1)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l.Close()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("closing the listener must remove the socket: %v", err)
	}

	// Anything that is not a socket is left alone.
	if err := os.WriteFile(sock, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen("unix://"+sock, 0o660, -1); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(sock); string(b) != "data" {
		t.Error("a regular file was touched")
	}

	if _, err := Listen("unix://"+sock+"2", 0o666, -1); err == nil || !strings.Contains(err.Error(), "world-writable") {
		t.Errorf("Listen with mode 0666: %v, want a refusal", err)
	}
	l, err = Listen("unix://"+sock+"3", 0o660, os.Getgid())
	if err != nil {
		t.Fatalf("Listen with a group: %v", err)
	}
	l.Close()

	for _, bad := range []string{"tcp://127.0.0.1:1234", "unix://relative.sock", "relative.sock"} {
		if _, err := Listen(bad, 0o660, -1); err == nil {
			t.Errorf("Listen(%q) accepted", bad)
		}
	}
}
