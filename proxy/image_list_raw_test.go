package proxy

import (
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"runtime/metrics"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
)

// memAliases is an in-memory AliasStore for tests that need thousands of
// tables: the real store writes each change to disk.
type memAliases struct {
	byName map[string]store.Alias
	gen    uint64
}

func newMemAliases(as ...store.Alias) *memAliases {
	m := &memAliases{byName: map[string]store.Alias{}}
	for _, a := range as {
		m.byName[a.Name] = a
	}
	return m
}

func (m *memAliases) Get(name string) (store.Alias, bool) { a, ok := m.byName[name]; return a, ok }
func (m *memAliases) filter(keep func(store.Alias) bool) []store.Alias {
	var out []store.Alias
	for _, a := range m.byName {
		if keep(a) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b store.Alias) int { return strings.Compare(a.Name, b.Name) })
	return out
}
func (m *memAliases) ByImage(id string) []store.Alias {
	return m.filter(func(a store.Alias) bool { return a.ImageID == id })
}
func (m *memAliases) ByMirror(ref string) []store.Alias {
	return m.filter(func(a store.Alias) bool { return a.Mirror == ref })
}
func (m *memAliases) ByRepository(repo string) []store.Alias {
	return m.filter(func(a store.Alias) bool { return store.Repository(a.Name) == repo })
}
func (m *memAliases) Put(a store.Alias) error { m.byName[a.Name] = a; m.gen++; return nil }
func (m *memAliases) Delete(names ...string) error {
	for _, n := range names {
		delete(m.byName, n)
	}
	m.gen++
	return nil
}
func (m *memAliases) DeleteImage(id string) ([]store.Alias, error) {
	gone := m.ByImage(id)
	for _, a := range gone {
		delete(m.byName, a.Name)
	}
	m.gen++
	return gone, nil
}
func (m *memAliases) Restore(as []store.Alias) (int, error) {
	for _, a := range as {
		m.byName[a.Name] = a
	}
	m.gen++
	return len(as), nil
}
func (m *memAliases) ImageIDs() []string {
	var ids []string
	for _, a := range m.byName {
		if !slices.Contains(ids, a.ImageID) {
			ids = append(ids, a.ImageID)
		}
	}
	return ids
}
func (m *memAliases) HasImage(id []byte) bool       { return len(m.ByImage(string(id))) > 0 }
func (m *memAliases) Images() (int, uint64)         { return len(m.ImageIDs()), m.gen }
func (m *memAliases) Generation() uint64            { return m.gen }
func (m *memAliases) KeepName(string, string) error { return nil }
func (m *memAliases) Kept(string, string) bool      { return false }

// randomListing makes a listing of up to n images out of a pool of ids, with
// the names a runtime would show (mirror names among them), sometimes a
// field the proxy does not know.
func randomListing(r *rand.Rand, n int) *runtimeapi.ListImagesResponse {
	resp := &runtimeapi.ListImagesResponse{}
	for _, i := range r.Perm(12)[:r.IntN(n+1)] {
		img := &runtimeapi.Image{Id: fmt.Sprintf("sha256:%064d", i), Size: uint64(r.IntN(1 << 20)), Pinned: r.IntN(5) == 0}
		for range r.IntN(3) {
			img.RepoTags = append(img.RepoTags, fmt.Sprintf("m%d.test/mirror/app%d:%d", r.IntN(2), i, r.IntN(3)))
		}
		if r.IntN(2) == 0 {
			img.RepoTags = append(img.RepoTags, fmt.Sprintf("docker.io/library/plain%d:1", i))
		}
		for range r.IntN(3) {
			img.RepoDigests = append(img.RepoDigests, fmt.Sprintf("m%d.test/mirror/app%d@sha256:%064d", r.IntN(2), i, r.IntN(4)))
		}
		if r.IntN(4) == 0 {
			img.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), uint64(i)))
		}
		if r.IntN(2) == 0 {
			img.Spec = &runtimeapi.ImageSpec{Image: img.Id, Annotations: map[string]string{"a": fmt.Sprint(i)}}
			img.Username = "user"
			img.Uid = &runtimeapi.Int64Value{Value: int64(i)}
		}
		resp.Images = append(resp.Images, img)
	}
	return resp
}

// hasAliased reports whether an image of l has an alias in s's table.
func hasAliased(s *Server, l *runtimeapi.ListImagesResponse) bool {
	return slices.ContainsFunc(l.Images, func(img *runtimeapi.Image) bool { return s.aliases.HasImage([]byte(img.Id)) })
}

// randomAliases points up to n original names at images of the pool.
func randomAliases(r *rand.Rand, n int) []store.Alias {
	var as []store.Alias
	for range r.IntN(n + 1) {
		i := r.IntN(12)
		mirror := fmt.Sprintf("m%d.test/mirror/app%d:%d", r.IntN(2), i, r.IntN(3))
		name := fmt.Sprintf("docker.io/library/app%d:%d", i, r.IntN(3))
		if r.IntN(3) == 0 {
			name = fmt.Sprintf("docker.io/library/app%d@sha256:%064d", i, r.IntN(4))
		}
		as = append(as, store.Alias{Name: name, ImageID: fmt.Sprintf("sha256:%064d", i), Mirror: mirror})
	}
	return as
}

// TestListingTranslationEqualsDecoding: translating the undecoded listing
// gives the same answer as decoding it, translating every image and
// encoding it again, over thousands of generated listings and alias tables.
func TestListingTranslationEqualsDecoding(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		aliases := newMemAliases(randomAliases(r, 8)...)
		s := New(nil, nil, aliases)
		listing := randomListing(r, 10)
		raw, err := proto.Marshal(listing)
		if err != nil {
			t.Fatal(err)
		}
		// Twice: the second answer comes from the cache. The answer comes
		// in buffers split anywhere, as gRPC may receive it.
		for round := range 2 {
			got, _, err := translateBuffers(s, split(r, raw))
			if err != nil {
				t.Fatalf("case %d: %v", i, err)
			}
			var gotResp runtimeapi.ListImagesResponse
			if err := proto.Unmarshal(got, &gotResp); err != nil {
				t.Fatalf("case %d: the translated listing does not decode: %v", i, err)
			}
			want := proto.Clone(listing).(*runtimeapi.ListImagesResponse)
			for _, img := range want.Images {
				s.translate(img)
			}
			if !proto.Equal(&gotResp, want) {
				t.Fatalf("case %d round %d:\nraw path: %v\ndecoded:  %v\naliases: %v", i, round, &gotResp, want, aliases.byName)
			}
		}
	}
}

// translateBuffers is listings.translate, which returns nil for a listing
// that goes out as it came; translateBuffers returns that listing.
func translateBuffers(s *Server, msg mem.BufferSlice) ([]byte, int, error) {
	data, n, err := s.listings.translate(msg, s)
	if data == nil && err == nil {
		return msg.Materialize(), n, nil
	}
	return data, n, err
}

// split cuts b into up to 5 buffers at random places (empty ones among
// them), as gRPC hands over a message received in several frames.
func split(r *rand.Rand, b []byte) mem.BufferSlice {
	cuts := []int{0, len(b)}
	for range r.IntN(5) {
		cuts = append(cuts, r.IntN(len(b)+1))
	}
	slices.Sort(cuts)
	var out mem.BufferSlice
	for i := 1; i < len(cuts); i++ {
		out = append(out, mem.SliceBuffer(b[cuts[i-1]:cuts[i]]))
	}
	return out
}

// TestListingKeyOfBuffers: the key of a listing read in the buffers it came
// in is its key read in one piece, however it is split, for well-formed
// listings with top-level fields of every wire type a listing can have;
// anything keyOf refuses, keyOfBuffers refuses too.
func TestListingKeyOfBuffers(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var l listings
	l.seeds = [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}
	for i := range 5000 {
		raw, err := proto.Marshal(randomListing(r, 10))
		if err != nil {
			t.Fatal(err)
		}
		for range r.IntN(3) { // fields a listing does not define
			num := protowire.Number(2 + r.IntN(1000))
			switch r.IntN(4) {
			case 0:
				raw = protowire.AppendVarint(protowire.AppendTag(raw, num, protowire.VarintType), r.Uint64())
			case 1:
				raw = protowire.AppendFixed32(protowire.AppendTag(raw, num, protowire.Fixed32Type), r.Uint32())
			case 2:
				raw = protowire.AppendFixed64(protowire.AppendTag(raw, num, protowire.Fixed64Type), r.Uint64())
			default:
				raw = protowire.AppendString(protowire.AppendTag(raw, num, protowire.BytesType), strings.Repeat("x", r.IntN(300)))
			}
		}
		want, ok := l.keyOf(raw)
		if !ok {
			t.Fatalf("case %d: keyOf refused a well-formed listing", i)
		}
		got, ok := l.keyOfBuffers(split(r, raw))
		if !ok || got != want {
			t.Fatalf("case %d: keyOfBuffers = %v, %v; keyOf = %v", i, got, ok, want)
		}
		// Cut short, or with a byte changed: whatever keyOf says, the
		// same or a refusal.
		bad := slices.Clone(raw[:r.IntN(len(raw)+1)])
		if len(bad) > 0 && r.IntN(2) == 0 {
			bad[r.IntN(len(bad))] = byte(r.Uint32())
		}
		want, wantOK := l.keyOf(bad)
		got, ok = l.keyOfBuffers(split(r, bad))
		if ok && (!wantOK || got != want) {
			t.Fatalf("case %d: keyOfBuffers(%x) = %v; keyOf = %v, %v", i, bad, got, want, wantOK)
		}
	}
	// A varint of 10 bytes whose last one is over 1 overflows.
	over := append(protowire.AppendTag(nil, 2, protowire.VarintType), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02)
	if _, ok := l.keyOfBuffers(split(r, over)); ok {
		t.Error("keyOfBuffers read an overflowing varint")
	}
}

// TestListingReleasesMemory: the translation of a large listing is
// followed by a collection that hands the memory it went through back to
// the system; the answers kept for it, and small listings, are not.
func TestListingReleasesMemory(t *testing.T) {
	forced := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	settled := func(s *Server) {
		t.Helper()
		for i := 0; s.listings.releasing.Load(); i++ {
			if i == 500 {
				t.Fatal("the release did not end within 5s")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	listingOf := func(n int) []byte {
		l := &runtimeapi.ListImagesResponse{}
		for i := range n {
			l.Images = append(l.Images, &runtimeapi.Image{
				Id:       fmt.Sprintf("sha256:%064d", i),
				RepoTags: []string{fmt.Sprintf("m0.test/mirror/app%d:1", i)},
			})
		}
		raw, err := proto.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	s := New(nil, nil, newMemAliases(store.Alias{Name: "docker.io/library/app0:1", ImageID: fmt.Sprintf("sha256:%064d", 0), Mirror: "m0.test/mirror/app0:1"}))
	r := rand.New(rand.NewPCG(7, 8))

	large := listingOf(5000)
	if len(large) < releaseAfter {
		t.Fatalf("the large listing has %d bytes, under %d", len(large), releaseAfter)
	}
	before := forced()
	if _, n, err := translateBuffers(s, split(r, large)); err != nil || n != 1 {
		t.Fatalf("translate: %d aliased, %v", n, err)
	}
	settled(s)
	if forced() == before {
		t.Error("the translation of a large listing was not followed by a collection")
	}

	before = forced()
	if _, _, err := translateBuffers(s, split(r, large)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := translateBuffers(s, split(r, listingOf(10))); err != nil {
		t.Fatal(err)
	}
	settled(s)
	if forced() != before {
		t.Error("the answer kept for a large listing, or a small listing's translation, was followed by a collection")
	}
}

// TestListingCache: the translated answer is kept while the images and
// the alias table stay the same, whatever their order; a change to either
// is translated again.
func TestListingCache(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	aliases := newMemAliases(randomAliases(r, 8)...)
	for len(aliases.byName) < 4 {
		aliases = newMemAliases(randomAliases(r, 8)...)
	}
	s := New(nil, nil, aliases)
	listing := randomListing(r, 12)
	for len(listing.Images) < 10 || !hasAliased(s, listing) {
		listing = randomListing(r, 12)
	}
	wantTranslated := func(how string, raw []byte, got []byte) {
		t.Helper()
		var resp, want runtimeapi.ListImagesResponse
		if err := proto.Unmarshal(got, &resp); err != nil {
			t.Fatalf("%s: %v", how, err)
		}
		if err := proto.Unmarshal(raw, &want); err != nil {
			t.Fatal(err)
		}
		for _, img := range want.Images {
			s.translate(img)
		}
		sortImages := func(l []*runtimeapi.Image) {
			slices.SortFunc(l, func(a, b *runtimeapi.Image) int { return strings.Compare(a.Id, b.Id) })
		}
		sortImages(resp.Images)
		sortImages(want.Images)
		if !proto.Equal(&resp, &want) {
			t.Errorf("%s:\ngot  %v\nwant %v", how, &resp, &want)
		}
	}
	raw, _ := proto.Marshal(listing)
	first, _, err := translateBuffers(s, split(r, raw))
	if err != nil {
		t.Fatal(err)
	}
	wantTranslated("first listing", raw, first)
	// The answer is kept as long as the listing stays the same: it holds
	// its bytes and not much more.
	if c := cap(first); c > len(first)+len(first)/16 {
		t.Errorf("the listing kept has room for %d bytes, for %d", c, len(first))
	}

	// The same images in another order: the answer kept is the answer.
	slices.Reverse(listing.Images)
	reordered, _ := proto.Marshal(listing)
	got, _, err := translateBuffers(s, split(r, reordered))
	if err != nil {
		t.Fatal(err)
	}
	if &got[0] != &first[0] {
		t.Error("a reordered listing was translated again")
	}
	wantTranslated("reordered listing", reordered, got)

	// One image fewer: translated again.
	listing.Images = listing.Images[1:]
	fewer, _ := proto.Marshal(listing)
	got, _, err = translateBuffers(s, split(r, fewer))
	if err != nil {
		t.Fatal(err)
	}
	if &got[0] == &first[0] {
		t.Error("a listing with an image fewer got the answer kept for the other")
	}
	wantTranslated("listing with an image fewer", fewer, got)

	// An alias change: translated again, and the answer shows the change.
	a := store.Alias{Name: "docker.io/library/new:1", ImageID: listing.Images[0].Id, Mirror: "m0.test/mirror/new:1"}
	if err := aliases.Put(a); err != nil {
		t.Fatal(err)
	}
	got, _, err = translateBuffers(s, split(r, fewer))
	if err != nil {
		t.Fatal(err)
	}
	var resp runtimeapi.ListImagesResponse
	if err := proto.Unmarshal(got, &resp); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(resp.Images[0].RepoTags, a.Name) {
		t.Errorf("after an alias was added, the image shows %v, want %s among them", resp.Images[0].RepoTags, a.Name)
	}
	wantTranslated("listing after an alias change", fewer, got)

	// A listing without aliased images comes back as it was sent.
	s2 := New(nil, nil, newMemAliases())
	if got, n, _ := s2.listings.translate(split(r, raw), s2); n != 0 || got != nil {
		t.Errorf("a listing without aliases was copied (%d aliased)", n)
	}

	// Bytes that are not a listing are an error, not a panic.
	if _, _, err := translateBuffers(s, split(r, []byte{0x0a, 0xff})); err == nil {
		t.Error("a truncated listing was accepted")
	}
}

// TestStatusTranslationEqualsDecoding: an ImageStatus answer translated
// undecoded (the image from the cache, the other fields as they came) is
// the answer decoded, translated and encoded again, over thousands of
// generated images, alias tables and verbose infos.
func TestStatusTranslationEqualsDecoding(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 3000 {
		aliases := newMemAliases(randomAliases(r, 8)...)
		s := New(nil, nil, aliases)
		listing := randomListing(r, 4)
		if len(listing.Images) == 0 {
			continue
		}
		resp := &runtimeapi.ImageStatusResponse{Image: listing.Images[0]}
		if r.IntN(2) == 0 {
			resp.Info = map[string]string{"info": fmt.Sprint(i)}
		}
		raw, err := proto.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		for round := range 2 { // the second from the cache
			img, found, err := lastField(raw, 1)
			if err != nil || !found {
				t.Fatalf("case %d: image field: %v, %v", i, found, err)
			}
			tr, err := s.statuses.translate(img, s)
			if err != nil {
				t.Fatalf("case %d: %v", i, err)
			}
			var got runtimeapi.ImageStatusResponse
			if err := proto.Unmarshal(withField(raw, 1, tr), &got); err != nil {
				t.Fatalf("case %d: the translated answer does not decode: %v", i, err)
			}
			want := proto.Clone(resp).(*runtimeapi.ImageStatusResponse)
			s.translate(want.Image)
			if !proto.Equal(&got, want) {
				t.Fatalf("case %d round %d:\nraw path: %v\ndecoded:  %v\naliases: %v", i, round, &got, want, aliases.byName)
			}
		}
	}
	if _, _, err := lastField([]byte{0x0a, 0xff}, 1); err == nil {
		t.Error("a truncated answer was accepted")
	}
	if _, found, err := lastField(nil, 1); found || err != nil {
		t.Errorf("an empty answer: found %v, %v; want an absent image", found, err)
	}
}

// TestStatusRequestByIDEqualsDecoding: the request by image id made from
// the undecoded request is the request decoded, given the id (withImage)
// and encoded again, with its other fields, unknown ones included, kept;
// over thousands of generated requests.
func TestStatusRequestByIDEqualsDecoding(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for i := range 3000 {
		spec := &runtimeapi.ImageSpec{Image: fmt.Sprintf("docker.io/library/app%d:%d", r.IntN(50), r.IntN(9))}
		if r.IntN(2) == 0 {
			spec.Annotations = map[string]string{"a": fmt.Sprint(i), "b": "x"}
		}
		if r.IntN(2) == 0 {
			spec.UserSpecifiedImage = "app:" + fmt.Sprint(i)
		}
		if r.IntN(3) == 0 {
			spec.RuntimeHandler = "runc"
		}
		req := &runtimeapi.ImageStatusRequest{Image: spec, Verbose: r.IntN(2) == 0}
		raw, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if r.IntN(4) == 0 { // a field this build does not know, in the request and in its spec
			raw = protowire.AppendBytes(protowire.AppendTag(raw, 99, protowire.BytesType), []byte("later"))
			specRaw := protowire.AppendVarint(protowire.AppendTag(slices.Clone(bytesField(raw, 1)), 77, protowire.VarintType), 5)
			raw = withField(raw, 1, specRaw)
			if err := proto.Unmarshal(raw, req); err != nil {
				t.Fatal(err)
			}
		}
		id := fmt.Sprintf("sha256:%064x", r.Uint64())
		var got runtimeapi.ImageStatusRequest
		if err := proto.Unmarshal(statusRequestByID(raw, bytesField(raw, 1), id), &got); err != nil {
			t.Fatalf("case %d: the request by id does not decode: %v", i, err)
		}
		want := &runtimeapi.ImageStatusRequest{Image: withImage(req.GetImage(), id), Verbose: req.GetVerbose()}
		want.ProtoReflect().SetUnknown(req.ProtoReflect().GetUnknown())
		want.Image.ProtoReflect().SetUnknown(req.GetImage().ProtoReflect().GetUnknown())
		if !proto.Equal(&got, want) {
			t.Fatalf("case %d:\nraw path: %v\ndecoded:  %v", i, &got, want)
		}
	}
}
