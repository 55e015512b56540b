package proxy

import (
	"context"
	"errors"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
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
	spec := bytesField(in.data, 1) // ImageStatusRequest.image
	name := bytesField(spec, 1)    // ImageSpec.image
	if len(name) == 0 {
		return s.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{}) // the InvalidArgument answer
	}
	if a, aliased := s.lookupAlias(ctx, string(name)); aliased {
		return s.aliasStatusFrame(ctx, in, spec, a)
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

// aliasStatusFrame is aliasStatus for an undecoded request: the runtime is
// asked by image id, and its answer translated without decoding it, from a
// cache of translated images. The same image is asked about before every
// start of each of its containers, under the name the pod gives.
func (s *Server) aliasStatusFrame(ctx context.Context, in *frame, spec []byte, a store.Alias) (any, error) {
	out := new(frame)
	if err := s.conn.Invoke(ctx, runtimeapi.ImageService_ImageStatus_FullMethodName, &frame{data: statusRequestByID(in.data, spec, a.ImageID)}, out, rawCall); err != nil {
		return nil, err
	}
	img, found, err := lastField(out.data, 1) // ImageStatusResponse.image
	if err != nil {
		return nil, err
	}
	if !found {
		s.dropStale(a)
		var req runtimeapi.ImageStatusRequest
		if err := proto.Unmarshal(in.data, &req); err != nil {
			return nil, err
		}
		return s.forwardStatus(ctx, &req)
	}
	if !isImageID(a.ImageID) {
		s.fixAliasID(a, string(bytesField(img, 1))) // Image.id
	}
	t, err := s.statuses.translate(img, s)
	if err != nil {
		return nil, err
	}
	return &frame{data: withField(out.data, 1, t)}, nil
}

// statusRequestByID is the ImageStatusRequest req (undecoded) asking for
// image id instead of the name it gives: ImageSpec.image replaced, every
// other field of the request and of its ImageSpec (verbose, annotations,
// user_specified_image, runtime_handler, fields this build does not know)
// kept as they came. spec is req's ImageSpec, as bytesField read it (so
// both have been parsed).
func statusRequestByID(req, spec []byte, id string) []byte {
	return withField(req, 1, withField(spec, 1, []byte(id)))
}

// statuses caches translated images, as the runtime sent them → as the
// caller sees them, for one generation of the alias table.
type statuses struct {
	mu  sync.Mutex
	gen uint64
	m   map[string][]byte
}

// statusCacheSize bounds the cache: past it, the cache starts over. Each
// entry is one image a pod asked about by an original name.
const statusCacheSize = 1024

// translate returns the translation of the undecoded Image img. The
// result is shared, and must not be changed.
func (c *statuses) translate(img []byte, s *Server) ([]byte, error) {
	gen := s.aliases.Generation() // before reading the table: an entry is never newer than its tag
	c.mu.Lock()
	if c.m == nil || c.gen != gen || len(c.m) >= statusCacheSize {
		c.m, c.gen = map[string][]byte{}, gen
	}
	t, ok := c.m[string(img)]
	c.mu.Unlock()
	if ok {
		return t, nil
	}
	t, err := s.translateImage(nil, img)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.gen == gen {
		c.m[string(img)] = t
	}
	c.mu.Unlock()
	return t, nil
}

// errBadStatus is a runtime answer that is not an ImageStatusResponse.
var errBadStatus = errors.New("ImageStatus: the runtime's answer is not a valid ImageStatusResponse")

// lastField is bytesField that tells an empty field from an absent one,
// and a message that does not parse.
func lastField(b []byte, num protowire.Number) (v []byte, found bool, err error) {
	for len(b) > 0 {
		n, t, l := protowire.ConsumeTag(b)
		if l < 0 {
			return nil, false, errBadStatus
		}
		b = b[l:]
		m := protowire.ConsumeFieldValue(n, t, b)
		if m < 0 {
			return nil, false, errBadStatus
		}
		if n == num && t == protowire.BytesType {
			v, _ = protowire.ConsumeBytes(b[:m])
			found = true
		}
		b = b[m:]
	}
	return v, found, nil
}

// withField returns the message b with length-delimited field num set to v
// (first, every other occurrence of num dropped) and every other field as
// it was. b has been parsed (lastField) before.
func withField(b []byte, num protowire.Number, v []byte) []byte {
	out := make([]byte, 0, len(b)+len(v)+8)
	out = protowire.AppendTag(out, num, protowire.BytesType)
	out = protowire.AppendBytes(out, v)
	for len(b) > 0 {
		n, t, l := protowire.ConsumeTag(b)
		if l < 0 {
			return append(out, b...) // not reached: b parsed
		}
		m := protowire.ConsumeFieldValue(n, t, b[l:])
		if m < 0 {
			return append(out, b...)
		}
		if n != num {
			out = append(out, b[:l+m]...)
		}
		b = b[l+m:]
	}
	return out
}
