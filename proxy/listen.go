package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Listen creates the unix socket the proxy serves on: the parent directory
// is created, a stale socket left by a crash is removed, and the socket gets
// mode (e.g. 0660) and group gid (-1: the process's) so only its owner and
// group can talk CRI. A world-writable mode is refused: CRI is root on the
// node. A socket some live process still answers on is never taken over,
// and a path that is not a socket is never removed.
func Listen(endpoint string, mode os.FileMode, gid int) (net.Listener, error) {
	path, err := SocketPath(endpoint)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if mode&0o002 != 0 {
		return nil, fmt.Errorf("listen %s: mode %04o is world-writable; anyone could drive the container runtime", path, mode)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen: %w", err)
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("listen: %w", err)
		}
	}
	return l, nil
}

func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("exists and is not a socket; refusing to remove it")
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("another process is serving on this socket")
	}
	return os.Remove(path)
}
