package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// waitErr waits a bounded time for a server goroutine to return.
func waitErr(t *testing.T, errc <-chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("server did not stop after its context was canceled")
		return nil
	}
}

func TestServeAnswersAndStopsOnCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, ln, NewHandler(prometheus.NewRegistry(), nil)) }()

	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
		t.Errorf("/healthz = %d %q", resp.StatusCode, body)
	}

	cancel()
	if err := waitErr(t, errc); err != nil {
		t.Errorf("serve after cancel = %v, want nil", err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("listener still accepts after stop")
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, "127.0.0.1:0", http.NotFoundHandler()) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := waitErr(t, errc); err != nil {
		t.Errorf("Serve after cancel = %v, want nil", err)
	}
}

func TestServeListenErrorNamesAddr(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()

	err = Serve(context.Background(), addr, http.NotFoundHandler())
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Serve on a busy port = %v, want an error naming %s", err, addr)
	}
}

func TestListenBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	if ln, err := Listen(addr); err == nil || !strings.Contains(err.Error(), addr) {
		if ln != nil {
			ln.Close()
		}
		t.Fatalf("Listen on a busy port = %v, want an error naming %s", err, addr)
	}

	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- ServeListener(ctx, ln, NewHandler(prometheus.NewRegistry(), nil)) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	if err := waitErr(t, errc); err != nil {
		t.Errorf("ServeListener after cancel = %v, want nil", err)
	}
}

// A request still running at shutdown sees its context end, so it cannot
// hold the process for the whole grace period.
func TestServeCancelsInFlightRequests(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, ln, slow) }()
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/")
		if err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	begin := time.Now()
	cancel()
	if err := waitErr(t, errc); err != nil {
		t.Errorf("serve = %v, want nil", err)
	}
	if d := time.Since(begin); d > shutdownGrace/2 {
		t.Errorf("shutdown took %v with an in-flight request", d)
	}
}

// TestServeCapsConnections: idle connections from a local client cannot
// use up the process's file descriptors; once they go, scrapes answer.
func TestServeCapsConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, ln, NewHandler(prometheus.NewRegistry(), nil)) }()
	defer func() {
		cancel()
		waitErr(t, errc)
	}()

	before := openFDs(t)
	const clients = 200
	conns := make([]net.Conn, 0, clients)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range clients {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// Give the server time to accept what it will (a bounded wait, not a speed assert).
	var grown int
	for range 20 {
		time.Sleep(50 * time.Millisecond)
		grown = openFDs(t) - before
	}
	// The test's own client sockets count too.
	if limit := clients + MaxConns + 8; grown > limit {
		t.Errorf("%d idle clients grew the open descriptors by %d, want at most %d (the clients' own plus %d)", clients, grown, limit, MaxConns)
	}

	for _, c := range conns {
		c.Close()
	}
	conns = conns[:0]
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatalf("/healthz after the idle clients left: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz = %d", resp.StatusCode)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}
