package proxy

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ImageStatus runs before every container start, and for nearly every call
// no alias is involved. So the proxy does not decode the call it forwards:
// it reads the image name straight from the request bytes, and the image id
// straight from the response bytes, and decodes (to translate) only when an
// alias is concerned. test/bench measures what that saves against a raw
// relay (test/bench/RESULTS.md).

func imageStatusHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(frame)
	if err := dec(in); err != nil {
		return nil, err
	}
	s := srv.(*Server)
	if interceptor == nil {
		return s.imageStatusFrame(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: runtimeapi.ImageService_ImageStatus_FullMethodName}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return s.imageStatusFrame(ctx, req.(*frame))
	})
}

// imageStatusFrame answers an undecoded ImageStatusRequest.
func (s *Server) imageStatusFrame(ctx context.Context, in *frame) (any, error) {
	name := bytesField(bytesField(in.data, 1), 1) // ImageStatusRequest.image.image
	if len(name) == 0 {
		return s.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{}) // the InvalidArgument answer
	}
	if a, aliased := s.lookupAlias(ctx, string(name)); aliased {
		var req runtimeapi.ImageStatusRequest
		if err := proto.Unmarshal(in.data, &req); err != nil {
			return nil, err
		}
		return s.aliasStatus(ctx, &req, a)
	}
	out := new(frame)
	if err := s.conn.Invoke(ctx, runtimeapi.ImageService_ImageStatus_FullMethodName, in, out, rawCall); err != nil {
		return nil, err
	}
	id := bytesField(bytesField(out.data, 1), 1) // ImageStatusResponse.image.id
	if len(id) == 0 || !s.aliases.HasImage(id) { // no copy of the id, no slice of aliases
		return out, nil
	}
	var resp runtimeapi.ImageStatusResponse
	if err := proto.Unmarshal(out.data, &resp); err != nil {
		return nil, err
	}
	s.translate(resp.Image)
	return &resp, nil
}
