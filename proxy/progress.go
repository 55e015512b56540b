package proxy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// A runtime pull from a mirror is abandoned as stalled when the runtime
// moves fewer than stallMinRate bytes per second over a whole stall window
// (WithStallTimeout), so a mirror that accepts connections and then answers
// nothing, or trickles its blobs, costs one window, not the caller's whole
// deadline, while a large image on a working mirror takes as long as it
// needs. A working registry moves megabytes a second; 1 KiB/s is far below
// any pull worth waiting for.
const stallMinRate = 1024

// DefaultStallTimeout is the default stall window.
const DefaultStallTimeout = 30 * time.Second

// errStalled stops a runtime pull that makes no progress.
var errStalled = errors.New("stalled")

// ingestMeter reports how many bytes the runtime has moved into its content
// store so far, across every pull in flight, and how many downloads are in
// flight now.
type ingestMeter interface {
	ingested(ctx context.Context) (moved int64, inFlight int, err error)
}

// criNamespace is the containerd namespace its CRI plugin pulls into.
const criNamespace = "k8s.io"

// containerdIngests reads containerd's ingest statuses from its content
// service, which containerd serves on the same socket as its CRI. Bytes are
// counted per ingest, so an ingest that completes and leaves the list keeps
// what it contributed.
type containerdIngests struct {
	content contentapi.ContentClient

	mu   sync.Mutex
	seen map[string]int64 // offset of each ingest at the last call
	sum  int64            // bytes moved so far
}

func newContainerdIngests(conn grpc.ClientConnInterface) *containerdIngests {
	return &containerdIngests{content: contentapi.NewContentClient(conn), seen: map[string]int64{}}
}

func (c *containerdIngests) ingested(ctx context.Context) (int64, int, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, "containerd-namespace", criNamespace)
	resp, err := c.content.ListStatuses(ctx, &contentapi.ListStatusesRequest{})
	if err != nil {
		return 0, 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := make(map[string]int64, len(resp.GetStatuses()))
	for _, st := range resp.GetStatuses() {
		off := st.GetOffset()
		now[st.GetRef()] = off
		if prev, ok := c.seen[st.GetRef()]; ok && off >= prev {
			c.sum += off - prev
		} else {
			c.sum += off // a new ingest, or one restarted from the beginning
		}
	}
	c.seen = now
	return c.sum, len(now), nil
}

// watchProgress cancels ctx with errStalled when a pull makes no progress
// over a whole stall window: nothing was ever downloaded (a mirror that
// accepts connections and never answers), or downloads are in flight but
// move fewer than stallMinRate bytes a second (a trickle). A window without
// downloads after bytes were moved is the runtime unpacking, and is waited
// for. It returns at once, doing nothing, when the runtime cannot report
// its progress (CRI-O has no such service; --attempt-timeout is the bound
// there). Call stop when the pull ends.
//
// The runtime reports the downloads of all pulls together, so a stalled
// pull beside a busy one may be kept alive by the other's progress.
func (s *Server) watchProgress(ctx context.Context, cancel context.CancelCauseFunc) (stop func()) {
	if s.stallTimeout <= 0 || s.progress == nil {
		return func() {}
	}
	window := s.stallTimeout
	every := min(time.Second, window/4)
	minBytes := int64(stallMinRate * window.Seconds())
	type sample struct {
		at    time.Time
		moved int64
	}
	done := make(chan struct{})
	go func() {
		// A pull that ends within the first tick costs no call at all.
		tick := time.NewTicker(every)
		defer tick.Stop()
		var samples []sample
		var origin sample // the first sample: nothing moved since means nothing ever came
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case now := <-tick.C:
				moved, inFlight, err := s.progress.ingested(ctx)
				if status.Code(err) == codes.Unimplemented {
					s.progressOnce.Do(func() {
						s.log.Info("the runtime does not report pull progress: a mirror pull is bounded by --attempt-timeout, and by the stall window for an answer when its probe found it slow")
					})
					return
				}
				if err != nil {
					continue // says nothing about the pull
				}
				if samples == nil {
					origin = sample{now, moved}
				}
				samples = append(samples, sample{now, moved})
				// The base is the newest sample at least a window old.
				for len(samples) > 2 && now.Sub(samples[1].at) >= window {
					samples = samples[1:]
				}
				base := samples[0]
				if now.Sub(base.at) < window {
					continue
				}
				switch inWindow := moved - base.moved; {
				case moved == origin.moved:
					cancel(fmt.Errorf("%w: the runtime downloaded nothing in %s", errStalled, now.Sub(origin.at).Round(time.Second)))
					return
				case inFlight > 0 && inWindow < minBytes:
					cancel(fmt.Errorf("%w: the runtime downloaded %d bytes in %s", errStalled, inWindow, now.Sub(base.at).Round(time.Second)))
					return
				}
			}
		}
	}()
	return func() { close(done) }
}
