package proxy

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/fakecri"
)

// TestRuntimeRestart: while the runtime is gone calls fail fast with
// Unavailable and Ready says so; once it is back the same connection serves
// again within a few seconds, without restarting the proxy.
func TestRuntimeRestart(t *testing.T) {
	path := fakecri.ShortSocket(t, "rt.sock")
	serve := func() *grpc.Server {
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		gs := grpc.NewServer()
		runtimeapi.RegisterImageServiceServer(gs, fakecri.New())
		go gs.Serve(l)
		return gs
	}
	gs := serve()
	conn, err := DialRuntime("unix://" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	srv := New(conn, nil, nil)
	if err := srv.Ready(ctx(t)); err != nil {
		t.Fatalf("Ready with the runtime up: %v", err)
	}

	gs.Stop()
	start := time.Now()
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Ready(c)
	if status.Code(err) != codes.Unavailable {
		t.Errorf("Ready with the runtime down = %v, want Unavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("a call with the runtime down took %v: it must fail fast, not wait", d)
	}

	gs = serve()
	defer gs.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for srv.Ready(ctx(t)) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the runtime came back but the proxy did not reconnect within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
