package proxy

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RemoveImage removes an image named by its original name, a runtime name or
// its id, and forgets the aliases that no longer point at anything.
//
// Runtimes differ on what removing one name of a multi-name image does
// (containerd removes the image, CRI-O may only untag), so after the removal
// the proxy asks the runtime whether the image is still there: if it is gone
// every alias of it goes; if it stays, only the alias that was named goes.
func (s *Server) RemoveImage(ctx context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	image := req.GetImage().GetImage()
	if image == "" {
		return nil, status.Error(codes.InvalidArgument, "RemoveImage: image spec with an image name or id is required")
	}

	target := req.GetImage()
	alias, aliased := s.lookupAlias(ctx, image)
	id := alias.ImageID
	if aliased {
		target = withImage(req.GetImage(), alias.ImageID)
	} else {
		st, err := s.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: req.GetImage()})
		if err != nil {
			return nil, err
		}
		id = st.GetImage().GetId()
	}

	if _, err := s.images.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: target}); err != nil {
		return nil, err
	}
	if id == "" {
		return &runtimeapi.RemoveImageResponse{}, nil
	}

	st, err := s.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: withImage(req.GetImage(), id)})
	switch {
	case err != nil:
		// Removed, but the runtime did not say what is left: keep the aliases
		// (a stale one is dropped on its next lookup).
		s.log.WithError(err).WithField("image", image).Warn("image removed; cannot check what is left of it")
	case st.GetImage() == nil:
		if dropped, err := s.aliases.DeleteImage(id); err != nil {
			s.log.WithError(err).WithField("image_id", id).Warn("cannot drop aliases of removed image")
		} else if len(dropped) > 0 {
			s.log.WithFields(map[string]any{"image_id": id, "aliases": len(dropped)}).Info("dropped aliases of removed image")
		}
	case aliased:
		if err := s.aliases.Delete(alias.Name); err != nil {
			s.log.WithError(err).WithField("image", alias.Name).Warn("cannot drop alias")
		}
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}
