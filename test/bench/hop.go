package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

// rawCodec moves gRPC messages as the bytes they arrived in. The hop never
// decodes a message: that is what makes it the cheapest possible forwarder
// and so the yardstick for the proxy's own cost.
type rawCodec struct{}

// rawMsg holds the received buffers. They are reference-counted pool buffers:
// Unmarshal takes a reference so they outlive the call, and Marshal hands
// that reference back to gRPC, which frees it once the bytes are written.
// No byte is copied on the way through.
type rawMsg struct{ data mem.BufferSlice }

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*rawMsg)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	data := m.data
	m.data = nil
	return data, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*rawMsg)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	data.Ref()
	m.data = data
	return nil
}

// hop is the reference forwarder: a gRPC server that relays every unary call
// to the runtime unchanged. It does what any CRI proxy must do at the least
// (one more process hop, one more HTTP/2 stream each way) and nothing else.
type hop struct {
	gs   *grpc.Server
	sock string
}

// startHop serves the relay on a unix socket at sock, in front of upstream.
// Only unary calls are relayed: the benchmark sends ImageStatus and
// ListImages through the hop, and a streaming relay would cost a goroutine
// per call that the proxy's typed handlers do not pay either.
func startHop(sock string, upstream *grpc.ClientConn) (*hop, error) {
	_ = os.Remove(sock)
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("reference hop: %w", err)
	}
	relay := func(_ any, ss grpc.ServerStream) error {
		method, ok := grpc.MethodFromServerStream(ss)
		if !ok {
			return status.Error(codes.Internal, "reference hop: no method")
		}
		in := new(rawMsg)
		if err := ss.RecvMsg(in); err != nil {
			return err
		}
		out := new(rawMsg)
		if err := upstream.Invoke(ss.Context(), method, in, out, grpc.ForceCodecV2(rawCodec{})); err != nil {
			return err
		}
		return ss.SendMsg(out)
	}
	gs := grpc.NewServer(
		grpc.ForceServerCodecV2(rawCodec{}),
		grpc.UnknownServiceHandler(relay),
		grpc.MaxRecvMsgSize(maxMsgSize),
		grpc.MaxSendMsgSize(maxMsgSize),
	)
	go func() { _ = gs.Serve(lis) }()
	return &hop{gs: gs, sock: sock}, nil
}

// serveHop is the hop process's main: it serves until ctx ends. With
// pprofAddr it also serves /debug/pprof/ there, so that the hop can be
// profiled under the same load as the proxy.
func serveHop(ctx context.Context, sock, upstreamSock, pprofAddr string) error {
	up, err := dial("containerd", upstreamSock)
	if err != nil {
		return err
	}
	defer up.close()
	h, err := startHop(sock, up.conn)
	if err != nil {
		return err
	}
	defer h.gs.Stop()
	if pprofAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		srv := &http.Server{Addr: pprofAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.ListenAndServe() }()
		defer srv.Close()
	}
	<-ctx.Done()
	return nil
}

// hopProcess is the reference hop running as its own process. It is a
// process of its own, like the proxy, so that both pay the same wake-ups
// between client, forwarder and runtime; a hop inside the driver would
// share the client's scheduler and look cheaper than any real proxy can be.
type hopProcess struct {
	cmd  *exec.Cmd
	sock string
	done chan struct{}
}

// startHopProcess runs this binary again with -hop and waits until the hop
// answers an ImageService call. procs > 0 runs it with GOMAXPROCS=procs,
// 0 with the Go runtime's own choice.
func startHopProcess(ctx context.Context, sock, containerdSock, pprofAddr string, procs int) (*hopProcess, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-hop", sock, "-containerd", containerdSock, "-hop-pprof", pprofAddr)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if procs > 0 {
		cmd.Env = append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", procs))
	}
	// The hop must not outlive the driver, whatever kills the driver. It
	// gets a session of its own, as test/lib.sh gives the proxy (setsid):
	// with the kernel's autogroup scheduling, processes of one session share
	// a CPU-time group, and a hop in the driver's group would be scheduled
	// differently from the proxy.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start reference hop: %w", err)
	}
	h := &hopProcess{cmd: cmd, sock: sock, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(h.done) }()

	t, err := dial("hop", sock)
	if err != nil {
		h.stop()
		return nil, err
	}
	defer t.close()
	for i := 0; ; i++ {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := t.count(cctx)
		cancel()
		if err == nil {
			return h, nil
		}
		if i == 50 || ctx.Err() != nil {
			h.stop()
			return nil, fmt.Errorf("reference hop not answering: %w", err)
		}
		select {
		case <-h.done:
			return nil, errors.New("reference hop exited at start")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (h *hopProcess) pid() int { return h.cmd.Process.Pid }

// stop ends the hop by its pid: SIGTERM, then SIGKILL after 5s.
func (h *hopProcess) stop() {
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(5 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.done
	}
	_ = os.Remove(h.sock)
}
