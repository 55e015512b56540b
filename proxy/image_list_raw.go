package proxy

import (
	"context"
	"errors"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// An unfiltered ListImages carries every image of the node: thousands of
// messages, of which only the aliased ones change. So the proxy does not
// decode the listing: it walks the runtime's bytes, copies every image
// without aliases as it is, and puts in the translated bytes of each aliased
// image, from a cache keyed by the image's own bytes (the runtime lists its
// images in any order, so a key over the whole answer would rarely hit). A
// filtered listing is small and takes the typed path (ListImages).

// listImagesHandler is ListImages taking the request undecoded.
func listImagesHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(frame)
	if err := dec(in); err != nil {
		return nil, err
	}
	s := srv.(*Server)
	if interceptor == nil {
		return s.listImagesFrame(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: runtimeapi.ImageService_ListImages_FullMethodName}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return s.listImagesFrame(ctx, req.(*frame))
	})
}

// listImagesFrame answers an undecoded ListImagesRequest.
func (s *Server) listImagesFrame(ctx context.Context, in *frame) (any, error) {
	if len(bytesField(in.data, 1)) != 0 { // ListImagesRequest.filter
		var req runtimeapi.ListImagesRequest
		if err := proto.Unmarshal(in.data, &req); err != nil {
			return nil, err
		}
		return s.ListImages(ctx, &req)
	}
	out := new(frame)
	if err := s.conn.Invoke(ctx, runtimeapi.ImageService_ListImages_FullMethodName, in, out, rawCall); err != nil {
		return nil, err
	}
	data, aliased, err := s.listings.translate(out.data, s)
	if err != nil {
		return nil, err
	}
	if n, _ := s.aliases.Images(); aliased < n {
		s.pruneStale(listedIDs(out.data))
	}
	return &frame{data: data}, nil
}

// errBadListing is a runtime answer that is not a ListImagesResponse.
var errBadListing = errors.New("ListImages: the runtime's answer is not a valid ListImagesResponse")

// listings translates undecoded ListImages answers.
type listings struct {
	mu  sync.Mutex
	gen uint64            // the alias table generation the cache was made for
	m   map[string][]byte // an Image as the runtime sent it → as the caller sees it
}

// listingCacheSize bounds the cache: past it, the cache starts over.
const listingCacheSize = 65536

// translate returns the listing b with every aliased image translated, and
// how many aliased images it holds. b itself is returned when no image is
// aliased.
func (l *listings) translate(b []byte, s *Server) ([]byte, int, error) {
	_, gen := s.aliases.Images()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil || l.gen != gen || len(l.m) > listingCacheSize {
		l.m, l.gen = map[string][]byte{}, gen
	}
	var out []byte // nil until the first aliased image
	aliased := 0
	for rest := b; len(rest) > 0; {
		at := len(b) - len(rest)
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return nil, 0, errBadListing
		}
		m := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if m < 0 {
			return nil, 0, errBadListing
		}
		field := rest[:n+m]
		rest = rest[n+m:]
		var img []byte
		if num == 1 && typ == protowire.BytesType { // ListImagesResponse.images
			img, _ = protowire.ConsumeBytes(field[n:])
		}
		if img == nil || !s.aliases.HasImage(bytesField(img, 1)) { // Image.id
			if out != nil {
				out = append(out, field...)
			}
			continue
		}
		aliased++
		t, ok := l.m[string(img)]
		if !ok {
			var im runtimeapi.Image
			if err := proto.Unmarshal(img, &im); err != nil {
				return nil, 0, errBadListing
			}
			s.translate(&im)
			var err error
			if t, err = proto.Marshal(&im); err != nil {
				return nil, 0, err
			}
			l.m[string(img)] = t
		}
		if out == nil {
			out = make([]byte, at, len(b)+len(b)/4)
			copy(out, b[:at])
		}
		out = protowire.AppendTag(out, 1, protowire.BytesType)
		out = protowire.AppendBytes(out, t)
	}
	if out == nil {
		return b, aliased, nil
	}
	return out, aliased, nil
}

// listedIDs returns the image ids of an undecoded ListImagesResponse.
func listedIDs(b []byte) []string {
	var ids []string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ids
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return ids
		}
		if num == 1 && typ == protowire.BytesType {
			img, _ := protowire.ConsumeBytes(b[n : n+m])
			ids = append(ids, string(bytesField(img, 1)))
		}
		b = b[n+m:]
	}
	return ids
}
