package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"
)

const (
	// shutdownGrace is how long in-flight scrapes get after ctx ends.
	shutdownGrace = 5 * time.Second
	// readHeaderTimeout and readTimeout stop a slow client from holding a
	// connection open; idleTimeout closes kept-alive connections between
	// scrapes (Prometheus scrapes every 15-60s and reconnects at no cost).
	// There is no write timeout: /debug/pprof/profile streams for as long
	// as the caller asks.
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	idleTimeout       = 30 * time.Second
	// MaxConns caps the connections the endpoint holds open at once. Any
	// local user can connect; without a cap, idle connections used up the
	// process's file descriptors, and the CRI socket could accept no more
	// calls. Connections beyond the cap wait in the kernel's backlog and
	// cost the process nothing.
	MaxConns = 32
)

// Serve listens on addr (host:port) and serves h until ctx is done, then shuts
// down, giving in-flight requests 5s. At most MaxConns connections are open
// at once. It returns nil after a clean stop; a
// listen failure or an unfinished shutdown is an error naming addr.
func Serve(ctx context.Context, addr string, h http.Handler) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics endpoint: listen on %s: %w", addr, err)
	}
	return serve(ctx, ln, h)
}

// Listen binds addr (host:port) for ServeListener. A caller binds before it
// announces itself, so that a taken port is an error at start, not a
// failure after "serving".
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics endpoint: listen on %s: %w", addr, err)
	}
	return ln, nil
}

// ServeListener is Serve on a listener from Listen, which it closes before
// returning.
func ServeListener(ctx context.Context, ln net.Listener, h http.Handler) error {
	return serve(ctx, ln, h)
}

// serve owns ln and closes it before returning.
func serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	addr := ln.Addr().String()
	ln = netutil.LimitListener(ln, MaxConns)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		IdleTimeout:       idleTimeout,
		// Handlers see ctx end, so a long /readyz check or pprof profile
		// stops with the process instead of running out the grace period.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		// Serve only returns on its own for a broken listener.
		return fmt.Errorf("metrics endpoint %s: %w", addr, err)
	case <-ctx.Done():
	}

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		_ = srv.Close()
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("metrics endpoint %s: shutdown: %w", addr, err)
	}
	return nil
}
