package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/testenv"
)

// sharedLayer is the one layer of every image in the numbered set. The set
// must be cheap: 5,000 images that differ only in their config are 5,000
// image ids for containerd, but one blob to upload and one snapshot to unpack.
func sharedLayer() (v1.Layer, error) { return random.Layer(64, types.DockerLayer) }

// numberedImage is image i of the set: the shared layer, a distinct config.
func numberedImage(layer v1.Layer, i int) (v1.Image, error) {
	return testenv.OfLayers(testenv.Arch, []v1.Layer{layer}, testenv.Env(fmt.Sprintf("BENCH_IMAGE=%d", i)))
}

// randomImage is an image of layers random (incompressible) layers of size
// bytes each: a pull of it moves real data.
func randomImage(size, layers int64, tag string) (v1.Image, error) {
	return testenv.Random(size, layers, testenv.Arch, testenv.Env("BENCH_TAG="+tag))
}

// push writes images to the registry, 16 at a time.
func push(ctx context.Context, images map[string]remote.Taggable) error {
	return testenv.Push(ctx, images, 16)
}

// pullAll pulls refs through t with a few workers, as a node would when
// many pods start. It stops at the first error.
func pullAll(ctx context.Context, t *target, refs []string, workers int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(refs) || ctx.Err() != nil {
					return
				}
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Minute)
				_, err := t.pull(pctx, refs[i])
				pcancel()
				if err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}
