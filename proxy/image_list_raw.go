package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/maphash"
	"math"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// An unfiltered ListImages carries every image of the node: thousands of
// messages, of which only the aliased ones change. So the proxy does not
// decode the listing: it walks the runtime's bytes, copies every image
// without aliases as it is, and puts in the translated bytes of each aliased
// image. The translated answer is kept, under a key that does not depend
// on the order of the images (containerd lists them from a map, in another order on most
// calls): while the images and the alias table stay the same, a listing
// costs one pass of hashing over the runtime's bytes, and the same images
// are answered in the order of the answer that was translated. The
// runtime's answer is read in the buffers gRPC received it in, not joined
// into one (but to be translated), and handed back to gRPC when it is sent
// as it came. A filtered listing is small and takes the typed path
// (ListImages).

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
	out := new(pooledFrame)
	if err := s.conn.Invoke(ctx, runtimeapi.ImageService_ListImages_FullMethodName, in, out, rawCall); err != nil {
		out.free()
		return nil, err
	}
	data, aliased, err := s.listings.translate(out.data, s)
	if err != nil {
		out.free()
		return nil, err
	}
	if n, _ := s.aliases.Images(); aliased < n {
		s.pruneStale(listedIDs(out.bytes()))
	}
	if data == nil { // the runtime's answer goes out as it came
		return out, nil
	}
	out.free()
	return &frame{data: data}, nil
}

// errBadListing is a runtime answer that is not a ListImagesResponse.
var errBadListing = errors.New("ListImages: the runtime's answer is not a valid ListImagesResponse")

// listings translates undecoded ListImages answers.
type listings struct {
	mu    sync.Mutex
	seeds [2]maphash.Seed
	// The last answer: its key, the alias table generation it was
	// translated at, and the translation (nil: it had no aliased image).
	key     listingKey
	gen     uint64
	valid   bool
	last    []byte
	aliased int

	releasing atomic.Bool // a releaseMemory is running
}

// releaseAfter is the size of a runtime's listing (about a thousand images)
// from which its translation is followed by releaseMemory.
const releaseAfter = 256 << 10

// releaseMemory hands the memory the process does not use back to the
// system, in the background, after the translation of a large listing. A
// translation is rare (the images or the alias table changed) and goes
// through several times the listing's size in garbage; the Go runtime
// would keep that memory resident as room for its next collection, for as
// long as the node's calls take to fill it, which on an idle node is
// minutes. It costs one collection, against the translation's decoding of
// every aliased image.
func (l *listings) releaseMemory() {
	if l.releasing.CompareAndSwap(false, true) {
		go func() {
			defer l.releasing.Store(false)
			debug.FreeOSMemory()
		}()
	}
}

// listingKey identifies a runtime's answer whatever the order of its
// fields: their number, the total size, and the sums of two independent
// hashes (seeded at random) of each field's bytes. Two different answers
// share a key with a chance of 2⁻¹²⁸.
type listingKey struct {
	fields, size int
	sums         [2]uint64
}

// translate returns the listing msg with every aliased image translated,
// and how many aliased images it holds; nil when no image is aliased, and
// msg is the answer as it is. A translated answer is shared, and must not
// be changed. msg is read in the buffers it came in; it is joined into one
// piece only to be translated, when the listing is not the one kept.
func (l *listings) translate(msg mem.BufferSlice, s *Server) ([]byte, int, error) {
	images, gen := s.aliases.Images()
	if images == 0 {
		return nil, 0, nil // no alias at all: nothing to look for
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seeds[0] == (maphash.Seed{}) {
		l.seeds = [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}
	}
	var b []byte // msg in one piece, once needed
	key, ok := l.keyOfBuffers(msg)
	if !ok { // a form keyOfBuffers does not read, or no listing at all
		b = msg.Materialize()
		if key, ok = l.keyOf(b); !ok {
			return nil, 0, errBadListing
		}
	}
	if l.valid && l.key == key && l.gen == gen {
		return l.last, l.aliased, nil
	}
	if b == nil {
		b = msg.Materialize()
	}
	out, aliased, err := translateListing(b, s)
	if err != nil {
		return nil, 0, err
	}
	// out is kept until the listing changes. It was given room to grow by
	// a quarter, and translation often shortens the names instead (a
	// mirror's name tends to carry the original's in its path): a tight
	// copy holds that room no longer, for one copy per translation.
	if cap(out)-len(out) > len(out)/16 {
		out = slices.Clip(slices.Clone(out))
	}
	l.key, l.gen, l.valid, l.last, l.aliased = key, gen, true, out, aliased
	if len(b) >= releaseAfter {
		l.releaseMemory()
	}
	return out, aliased, nil
}

// translateListing returns the listing b with every aliased image
// translated, and how many there are; nil if there are none.
func translateListing(b []byte, s *Server) ([]byte, int, error) {
	var out []byte     // nil until the first aliased image
	var scratch []byte // one translated image at a time
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
		var err error
		if scratch, err = s.translateImage(scratch[:0], img); err != nil {
			return nil, 0, err
		}
		if out == nil {
			out = make([]byte, at, len(b)+len(b)/4)
			copy(out, b[:at])
		}
		out = protowire.AppendTag(out, 1, protowire.BytesType)
		out = protowire.AppendBytes(out, scratch)
	}
	return out, aliased, nil
}

// Fields of runtimeapi.Image that translation reads or rewrites.
const (
	imageID          protowire.Number = 1
	imageRepoTags    protowire.Number = 2
	imageRepoDigests protowire.Number = 3
)

// translateImage appends to dst the undecoded Image img translated (see
// translate) without decoding the rest of it: only its id, repo_tags and
// repo_digests are read; the new names take the place of the old ones, and
// every other field is copied as it came.
func (s *Server) translateImage(dst, img []byte) ([]byte, error) {
	var names runtimeapi.Image
	for b := img; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, errBadListing
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, errBadListing
		}
		if typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b[n : n+m])
			switch num {
			case imageID:
				names.Id = string(v)
			case imageRepoTags:
				names.RepoTags = append(names.RepoTags, string(v))
			case imageRepoDigests:
				names.RepoDigests = append(names.RepoDigests, string(v))
			}
		}
		b = b[n+m:]
	}
	s.translate(&names)

	out := dst
	written := false
	writeNames := func() {
		for _, t := range names.RepoTags {
			out = protowire.AppendString(protowire.AppendTag(out, imageRepoTags, protowire.BytesType), t)
		}
		for _, d := range names.RepoDigests {
			out = protowire.AppendString(protowire.AppendTag(out, imageRepoDigests, protowire.BytesType), d)
		}
		written = true
	}
	for b := img; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		m := protowire.ConsumeFieldValue(num, typ, b[n:]) // parsed above
		field := b[:n+m]
		b = b[n+m:]
		if typ == protowire.BytesType && (num == imageRepoTags || num == imageRepoDigests) {
			continue
		}
		if !written && num > imageRepoDigests {
			writeNames()
		}
		out = append(out, field...)
	}
	if !written {
		writeNames()
	}
	return out, nil
}

// keyOf returns the key of the listing b; ok is false if b is not a
// sequence of protobuf fields.
func (l *listings) keyOf(b []byte) (k listingKey, ok bool) {
	k.size = len(b)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return k, false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return k, false
		}
		k.fields++
		k.sums[0] += maphash.Bytes(l.seeds[0], b[:n+m])
		k.sums[1] += maphash.Bytes(l.seeds[1], b[:n+m])
		b = b[n+m:]
	}
	return k, true
}

// keyOfBuffers is keyOf of the listing split into buffers, read where it
// lies: a field may start in one buffer and end in another. Across buffers
// it reads the wire types a listing has (varints, fixed-size and
// length-delimited fields); ok is false at any other, and at anything that
// does not parse, which keyOf then tells apart.
func (l *listings) keyOfBuffers(msg mem.BufferSlice) (k listingKey, ok bool) {
	var h [2]maphash.Hash
	h[0].SetSeed(l.seeds[0])
	h[1].SetSeed(l.seeds[1])
	r := bufferReader{msg: msg}
	for !r.done() {
		// Most fields lie in one buffer: they are read there, as keyOf
		// reads them.
		if num, typ, n := protowire.ConsumeTag(r.cur); n > 0 {
			if m := protowire.ConsumeFieldValue(num, typ, r.cur[n:]); m >= 0 {
				k.fields++
				k.sums[0] += maphash.Bytes(l.seeds[0], r.cur[:n+m])
				k.sums[1] += maphash.Bytes(l.seeds[1], r.cur[:n+m])
				r.cur = r.cur[n+m:]
				r.read += n + m
				continue
			}
		}
		h[0].Reset()
		h[1].Reset()
		tag, ok := r.varint(&h)
		if !ok {
			return k, false
		}
		num, typ := protowire.DecodeTag(tag)
		if tag>>3 > math.MaxInt32 || num < protowire.MinValidNumber {
			return k, false
		}
		switch typ {
		case protowire.VarintType:
			ok = r.skipVarint(&h)
		case protowire.Fixed32Type:
			ok = r.copy(&h, 4)
		case protowire.Fixed64Type:
			ok = r.copy(&h, 8)
		case protowire.BytesType:
			var n uint64
			if n, ok = r.varint(&h); ok {
				ok = r.copy(&h, n)
			}
		default:
			ok = false
		}
		if !ok {
			return k, false
		}
		k.fields++
		k.sums[0] += h[0].Sum64()
		k.sums[1] += h[1].Sum64()
	}
	k.size = r.read
	return k, true
}

// bufferReader reads a message split into buffers, and hashes what it reads.
type bufferReader struct {
	msg  mem.BufferSlice
	i    int    // msg[i] is the buffer being read
	cur  []byte // what is left of it
	read int    // bytes read
}

// fill makes cur the rest of the first buffer with bytes left; false at
// the end of the message.
func (r *bufferReader) fill() bool {
	for len(r.cur) == 0 {
		if r.i >= len(r.msg) {
			return false
		}
		r.cur = r.msg[r.i].ReadOnlyData()
		r.i++
	}
	return true
}

func (r *bufferReader) done() bool { return !r.fill() }

// copy hashes the next n bytes; false if the message is shorter.
func (r *bufferReader) copy(h *[2]maphash.Hash, n uint64) bool {
	for n > 0 {
		if !r.fill() {
			return false
		}
		c := r.cur[:min(n, uint64(len(r.cur)))]
		h[0].Write(c)
		h[1].Write(c)
		r.cur = r.cur[len(c):]
		r.read += len(c)
		n -= uint64(len(c))
	}
	return true
}

// varint hashes and decodes the next varint, as protowire.ConsumeVarint
// reads it.
func (r *bufferReader) varint(h *[2]maphash.Hash) (uint64, bool) {
	var v uint64
	for i := 0; i < binary.MaxVarintLen64; i++ {
		if !r.fill() {
			return 0, false
		}
		c := r.cur[0]
		h[0].WriteByte(c)
		h[1].WriteByte(c)
		r.cur = r.cur[1:]
		r.read++
		if i == binary.MaxVarintLen64-1 && c > 1 {
			return 0, false // overflows 64 bits
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, true
		}
	}
	return 0, false
}

func (r *bufferReader) skipVarint(h *[2]maphash.Hash) bool {
	_, ok := r.varint(h)
	return ok
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
