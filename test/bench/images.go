package main

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// sharedLayer is the one layer of every image in the numbered set. The set
// must be cheap: 5,000 images that differ only in their config are 5,000
// image ids for containerd, but one blob to upload and one snapshot to unpack.
func sharedLayer() (v1.Layer, error) { return random.Layer(64, types.DockerLayer) }

// withPlatform sets the config's platform to this machine's: containerd
// checks it even for a single-platform manifest. env makes the config, and
// so the image id, distinct.
func withPlatform(img v1.Image, env string) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Env = append(cf.Config.Env, env)
	return mutate.ConfigFile(img, cf)
}

// numberedImage is image i of the set: the shared layer, a distinct config.
func numberedImage(layer v1.Layer, i int) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	return withPlatform(img, fmt.Sprintf("BENCH_IMAGE=%d", i))
}

// randomImage is an image of layers random (incompressible) layers of size
// bytes each: a pull of it moves real data.
func randomImage(size, layers int64, tag string) (v1.Image, error) {
	img, err := random.Image(size, layers)
	if err != nil {
		return nil, err
	}
	return withPlatform(img, "BENCH_TAG="+tag)
}

// push writes images to the registry in parallel. Shared blobs are uploaded
// once per repository.
func push(ctx context.Context, images map[string]v1.Image) error {
	todo := make(map[name.Reference]remote.Taggable, len(images))
	for ref, img := range images {
		r, err := name.ParseReference(ref, name.Insecure)
		if err != nil {
			return fmt.Errorf("push %s: %w", ref, err)
		}
		todo[r] = img
	}
	if err := remote.MultiWrite(todo, remote.WithContext(ctx), remote.WithJobs(16)); err != nil {
		return fmt.Errorf("push %d images: %w", len(images), err)
	}
	return nil
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
