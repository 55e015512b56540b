//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestIdleMetricsConnections (issue 15 item 9): a local user holds hundreds of idle connections
// to the metrics address of a proxy whose descriptor limit is low. The proxy holds only a
// bounded number of them, so the CRI socket still accepts new clients and answers.
func TestIdleMetricsConnections(t *testing.T) {
	p := startProxy(t, registriesConf(sourceRule("m1")))
	pid := p.proc.cmd.Process.Pid
	base := procFDs(t, pid)
	limit := base + 48 // room for the metrics cap (32) and a few CRI clients, not for 300 more
	if out, err := exec.Command("prlimit", "--pid", strconv.Itoa(pid), fmt.Sprintf("--nofile=%d:%d", limit, limit)).CombinedOutput(); err != nil {
		t.Fatalf("prlimit: %v\n%s", err, out)
	}

	// The client keeps its connections open: one the proxy closes (after its read timeout) is
	// opened again at once, as a hostile local user would.
	const idle = 300
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	for range idle {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1)
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", p.metricsAddr, 5*time.Second)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				mu.Lock()
				select {
				case <-stop:
					mu.Unlock()
					c.Close()
					return
				default:
				}
				open[c] = true
				mu.Unlock()
				_ = c.SetDeadline(time.Now().Add(time.Minute))
				_, _ = c.Read(buf) // until the proxy closes it, or the test does
				mu.Lock()
				delete(open, c)
				mu.Unlock()
				c.Close()
			}
		}()
	}
	defer func() {
		mu.Lock()
		close(stop)
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	// Let the proxy accept what it will.
	var held int
	for range 20 {
		time.Sleep(50 * time.Millisecond)
		held = procFDs(t, pid) - base
	}
	t.Logf("%d idle metrics connections: the proxy holds %d more descriptors (limit %d, %d at start)", idle, held, limit, base)
	if held > 40 {
		t.Errorf("the proxy holds %d more descriptors for %d idle metrics connections, want at most 40", held, idle)
	}

	// A new CRI client: its connection needs a descriptor in the proxy. Its deadline is below
	// the metrics endpoint's 5s header timeout: the call must not wait for the proxy to shed
	// metrics connections (kubelet's calls carry deadlines too).
	conn, err := dialCRI(p.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	if _, err := runtimeapi.NewImageServiceClient(conn).ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{}); err != nil {
		t.Errorf("ImageFsInfo from a new CRI client while %d metrics connections sit idle: %v", idle, err)
	}
	if !p.proc.running() {
		t.Fatalf("the proxy exited: %s", p.proc.exitState())
	}
}

// procFDs counts the open descriptors of process pid.
func procFDs(t *testing.T, pid int) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}
