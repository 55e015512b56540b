package proxy

import (
	"context"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
)

const (
	// pruneBatch bounds the images one prune checks; the rest wait for the
	// next listing.
	pruneBatch = 256
	// pruneTimeout bounds each check.
	pruneTimeout = 5 * time.Second
)

// pruneStale drops the aliases of images that a complete listing (the ids
// of the answer to an unfiltered ListImages) no longer shows: removed behind
// the proxy's back or garbage collected. Each such image is first asked
// for by id, so one pulled after the listing was taken keeps its aliases.
// The checks run in the background, one prune at a time, so the listing is
// not held up.
func (s *Server) pruneStale(listed []string) {
	ids := s.aliases.ImageIDs()
	if len(ids) == 0 {
		return
	}
	seen := make(map[string]bool, len(listed))
	for _, id := range listed {
		seen[store.IDKey(id)] = true
	}
	var gone []string
	for _, id := range ids {
		if !seen[store.IDKey(id)] {
			gone = append(gone, id)
			if len(gone) == pruneBatch {
				break
			}
		}
	}
	if len(gone) == 0 || !s.pruning.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.pruning.Store(false)
		for _, id := range gone {
			ctx, cancel := context.WithTimeout(context.Background(), pruneTimeout)
			resp, err := s.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: id}})
			cancel()
			if err != nil {
				s.log.WithError(err).Debug("prune aliases: runtime did not answer; trying on a later listing")
				return
			}
			if resp.GetImage() != nil {
				continue
			}
			dropped, err := s.aliases.DeleteImage(id)
			if err != nil {
				s.log.WithError(err).WithField("image_id", id).Warn("cannot drop aliases of an image the runtime no longer has")
				continue
			}
			for _, a := range dropped {
				s.log.WithFields(map[string]any{"image": a.Name, "image_id": id}).Info("dropped stale alias: the runtime no longer has the image")
			}
		}
	}()
}
