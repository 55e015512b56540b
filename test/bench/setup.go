package main

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// numbered names image i of the set: 100 repositories, one tag per image.
func numbered(i int) string { return fmt.Sprintf("%s/set-%02d:v%d", benchPrefix, i%100, i) }

// prepare pushes the images every phase needs and pulls the small set: image
// 0 straight into containerd (an image the proxy has no alias for, the pure
// pass-through case), images 1..9 through the proxy (each with an alias, as
// on a node whose images all come from mirrors).
func (b *bench) prepare(ctx context.Context) error {
	const small = 10
	var err error
	if b.layer, err = sharedLayer(); err != nil {
		return err
	}
	images := map[string]remote.Taggable{}
	for i := range small {
		if images[b.cfg.mirrorRef(numbered(i))], err = numberedImage(b.layer, i); err != nil {
			return err
		}
	}
	for _, p := range []struct {
		ref          string
		size, layers int64
	}{{pullImage, 4 << 20, 2}, {dedupImage, 2 << 20, 2}} {
		if images[b.cfg.mirrorRef(p.ref)], err = randomImage(p.size, p.layers, p.ref); err != nil {
			return err
		}
	}
	// The tag check case: the pull image again, at the source and on the
	// mirror, so that both agree.
	images[b.cfg.tagCheckRef()] = images[b.cfg.mirrorRef(pullImage)]
	images[b.cfg.tagCheckMirrorRef()] = images[b.cfg.mirrorRef(pullImage)]
	for _, r := range fallbackRules(b.cfg.fallbackReps) {
		for k := range fallbackPulls + 1 {
			src := fallbackRef(r, k)
			// A layer of its own per image: each pull fetches and unpacks
			// something new, as a first pull on a node does.
			if images[b.cfg.mirrorRef(src)], err = randomImage(1024, 1, src); err != nil {
				return err
			}
		}
	}
	if err := b.step(fmt.Sprintf("push %d images to the registry", len(images)), func() error {
		return push(ctx, images)
	}); err != nil {
		return err
	}

	b.plain = b.cfg.mirrorRef(numbered(0))
	for i := 1; i < small; i++ {
		b.sources = append(b.sources, numbered(i))
		b.mirrors = append(b.mirrors, b.cfg.mirrorRef(numbered(i)))
	}
	return b.step(fmt.Sprintf("pull %d images (1 direct, %d through the proxy)", small, small-1), func() error {
		if _, err := b.direct.pull(ctx, b.plain); err != nil {
			return err
		}
		if err := pullAll(ctx, b.proxy, b.sources, 4); err != nil {
			return err
		}
		return b.pullCompare(ctx, b.sources)
	})
}

// grow brings the numbered set to n images, all but image 0 with an alias.
func (b *bench) grow(ctx context.Context, n int) error {
	have := len(b.sources) + 1
	if n <= have {
		return nil
	}
	images := make(map[string]remote.Taggable, n-have)
	var sources, mirrors []string
	for i := have; i < n; i++ {
		src := numbered(i)
		var err error
		if images[b.cfg.mirrorRef(src)], err = numberedImage(b.layer, i); err != nil {
			return err
		}
		sources, mirrors = append(sources, src), append(mirrors, b.cfg.mirrorRef(src))
	}
	if err := b.step(fmt.Sprintf("push %d more images", len(images)), func() error {
		return push(ctx, images)
	}); err != nil {
		return err
	}
	if err := b.step("pull them through the proxy (aliases), 8 at a time", func() error {
		if err := pullAll(ctx, b.proxy, sources, 8); err != nil {
			return err
		}
		return b.pullCompare(ctx, sources)
	}); err != nil {
		return err
	}
	b.sources, b.mirrors = append(b.sources, sources...), append(b.mirrors, mirrors...)
	return nil
}

// pullCompare pulls refs through the second proxy too, so that it holds
// the same aliases (containerd already has the images: these pulls only
// record the aliases).
func (b *bench) pullCompare(ctx context.Context, refs []string) error {
	if b.cmp == nil {
		return nil
	}
	return pullAll(ctx, b.cmp, refs, 8)
}
