package proxy

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
)

// ImageStatus answers for original names through the alias table and
// translates the runtime's answer for everything else.
func (s *Server) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	image := req.GetImage().GetImage()
	if image == "" {
		return nil, status.Error(codes.InvalidArgument, "ImageStatus: image spec with an image name or id is required")
	}
	if a, ok := s.lookupAlias(ctx, image); ok {
		return s.aliasStatus(ctx, req, a)
	}
	return s.forwardStatus(ctx, req)
}

// aliasStatus answers for a name the alias a stands for: the runtime is
// asked by image id. A stale alias is dropped and the runtime asked as is.
func (s *Server) aliasStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest, a store.Alias) (*runtimeapi.ImageStatusResponse, error) {
	byID := &runtimeapi.ImageStatusRequest{Image: withImage(req.GetImage(), a.ImageID), Verbose: req.GetVerbose()}
	resp, err := s.images.ImageStatus(ctx, byID)
	if err != nil {
		return nil, err
	}
	if resp.GetImage() != nil {
		s.fixAliasID(a, resp.Image.GetId())
		s.translate(resp.Image)
		return resp, nil
	}
	s.dropStale(a)
	return s.forwardStatus(ctx, req)
}

func (s *Server) forwardStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	resp, err := s.images.ImageStatus(ctx, req)
	if err != nil {
		return nil, err
	}
	s.translate(resp.GetImage())
	return resp, nil
}

// fixAliasID records the runtime's image id for an alias that holds a name
// in its place: earlier versions recorded CRI-O's PullImage answer
// ("mirror/repo@sha256:…") as the id, under which no image is listed.
func (s *Server) fixAliasID(a store.Alias, id string) {
	if isImageID(a.ImageID) || !isImageID(id) {
		return
	}
	old := a.ImageID
	a.ImageID = id
	if err := s.aliases.Put(a); err != nil {
		s.log.WithError(err).WithField("image", a.Name).Warn("cannot record the image id of an alias")
		return
	}
	s.log.WithFields(map[string]any{"image": a.Name, "image_id": id, "was": old}).Info("alias now records the runtime's image id in place of a name")
}

// dropStale forgets an alias whose image the runtime no longer has (removed
// behind the proxy's back, or garbage collected).
func (s *Server) dropStale(a store.Alias) {
	if err := s.aliases.Delete(a.Name); err != nil {
		s.log.WithError(err).WithField("image", a.Name).Warn("cannot drop stale alias")
		return
	}
	s.log.WithFields(map[string]any{"image": a.Name, "image_id": a.ImageID}).Info("dropped stale alias: the runtime no longer has the image")
}
