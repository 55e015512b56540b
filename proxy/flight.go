package proxy

import (
	"context"
	"sync"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// flights collapses concurrent identical pulls into one runtime pull.
//
// The shared pull runs on its own context, detached from any one caller:
// the first caller giving up must not fail the others. Each caller waits
// under its own deadline; when the last one has gone the shared pull is
// cancelled, so an abandoned pull does not run on forever.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done    chan struct{}
	resp    *runtimeapi.PullImageResponse
	err     error
	waiters int
	cancel  context.CancelFunc
}

// do runs pull once per key among concurrent callers. ctx's values travel
// with the shared pull; its deadline and cancellation do not.
func (f *flights) do(ctx context.Context, key string, pull func(context.Context) (*runtimeapi.PullImageResponse, error)) (*runtimeapi.PullImageResponse, error) {
	f.mu.Lock()
	fl, ok := f.m[key]
	if !ok {
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		fl = &flight{done: make(chan struct{}), cancel: cancel}
		f.m[key] = fl
		go func() {
			fl.resp, fl.err = pull(fctx)
			f.forget(key, fl)
			cancel()
			close(fl.done)
		}()
	}
	fl.waiters++
	f.mu.Unlock()

	select {
	case <-fl.done:
		return fl.resp, fl.err
	case <-ctx.Done():
		f.mu.Lock()
		fl.waiters--
		if fl.waiters == 0 {
			// Nobody wants this pull any more. A later caller starts afresh
			// rather than joining a pull that is being cancelled.
			if f.m[key] == fl {
				delete(f.m, key)
			}
			fl.cancel()
		}
		f.mu.Unlock()
		return nil, ctx.Err()
	}
}

func (f *flights) forget(key string, fl *flight) {
	f.mu.Lock()
	if f.m[key] == fl {
		delete(f.m, key)
	}
	f.mu.Unlock()
}
