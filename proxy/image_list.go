package proxy

import (
	"context"
	"errors"
	"io"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ListImages forwards the listing and shows aliased images under their
// original names. The server takes an unfiltered listing undecoded
// (listImagesFrame); this typed path serves filtered ones, and an unfiltered
// one from a caller inside the package.
func (s *Server) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	if f := s.aliasFilter(ctx, req.GetFilter()); f != req.GetFilter() {
		req = &runtimeapi.ListImagesRequest{Filter: f}
	}
	resp, err := s.images.ListImages(ctx, req)
	if err != nil {
		return nil, err
	}
	if req.GetFilter().GetImage().GetImage() == "" {
		// A filter without an image (crictl images sends one) lists them all.
		ids := make([]string, len(resp.GetImages()))
		for i, img := range resp.GetImages() {
			ids[i] = img.GetId()
		}
		s.pruneStale(ids)
	}
	for _, img := range resp.GetImages() {
		s.translate(img)
	}
	return resp, nil
}

// StreamImages is ListImages in chunks; each chunk is translated as it passes.
func (s *Server) StreamImages(req *runtimeapi.StreamImagesRequest, stream runtimeapi.ImageService_StreamImagesServer) error {
	ctx := stream.Context()
	if f := s.aliasFilter(ctx, req.GetFilter()); f != req.GetFilter() {
		req = &runtimeapi.StreamImagesRequest{Filter: f}
	}
	up, err := s.images.StreamImages(ctx, req)
	if err != nil {
		return err
	}
	for {
		resp, err := up.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, img := range resp.GetImages() {
			s.translate(img)
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// aliasFilter sends a filter naming an original name to the runtime as the
// image id it stands for; the runtime has never heard of that name.
func (s *Server) aliasFilter(ctx context.Context, f *runtimeapi.ImageFilter) *runtimeapi.ImageFilter {
	name := f.GetImage().GetImage()
	if name == "" {
		return f
	}
	a, ok := s.lookupAlias(ctx, name)
	if !ok {
		return f
	}
	return &runtimeapi.ImageFilter{Image: withImage(f.GetImage(), a.ImageID)}
}
