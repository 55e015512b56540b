package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
)

// cannedConn is a runtime connection that answers every unary call with
// one of its undecoded answers, in turn, so that a benchmark measures the
// proxy's own work on a call and not a transport's.
type cannedConn struct {
	answers [][]byte
	next    *int
}

func canned(answers ...[]byte) cannedConn { return cannedConn{answers: answers, next: new(int)} }

func (c cannedConn) Invoke(_ context.Context, _ string, _, reply any, _ ...grpc.CallOption) error {
	answer := c.answers[*c.next%len(c.answers)]
	*c.next++
	switch f := reply.(type) {
	case *frame:
		f.data = answer
	case *pooledFrame:
		// In frames of 16 KiB, as gRPC receives a message.
		f.data = nil
		for b := answer; len(b) > 0; {
			n := min(len(b), 16<<10)
			f.data = append(f.data, mem.SliceBuffer(b[:n]))
			b = b[n:]
		}
	case proto.Message:
		return proto.Unmarshal(answer, f)
	default:
		return errors.New("cannedConn answers protobuf and undecoded calls only")
	}
	return nil
}

func (cannedConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, errors.New("cannedConn has no streams")
}

// benchServer is a Server with n aliases (n images, one name each) in a real
// store, in front of a runtime that answers ImageStatus with image id.
func benchServer(b *testing.B, n int, id string) *Server {
	b.Helper()
	answer, err := proto.Marshal(&runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{
		Id: id, RepoTags: []string{"registry.k8s.io/pause:3.10"}, Size: 1234,
	}})
	if err != nil {
		b.Fatal(err)
	}
	return benchServerWith(b, n, canned(answer))
}

// benchServerWith is benchServer in front of conn.
func benchServerWith(b *testing.B, n int, conn cannedConn) *Server {
	b.Helper()
	st, err := store.Open(filepath.Join(b.TempDir(), "aliases.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	as := make([]store.Alias, n)
	for i := range as {
		name := fmt.Sprintf("docker.io/team/app-%05d:v1", i)
		as[i] = store.Alias{Name: name, ImageID: fmt.Sprintf("sha256:%064x", i+1), Mirror: "127.0.0.1:5000/mirror/" + name[len("docker.io/"):]}
	}
	if _, err := st.Restore(as); err != nil {
		b.Fatal(err)
	}
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	return New(conn, nil, st, WithLogger(quiet))
}

// BenchmarkImageStatusServer is the proxy's own work on a pass-through
// ImageStatus (a name without alias, an image without alias) with 5,000
// aliases in the table: the interceptors and the handler, without the
// transport on either side.
func BenchmarkImageStatusServer(b *testing.B) {
	s := benchServer(b, 5000, fmt.Sprintf("sha256:%064x", 1<<40))
	benchImageStatus(b, s, "registry.k8s.io/pause:3.10", func(out any) {
		if _, ok := out.(*frame); !ok {
			b.Fatalf("answer %T, want the runtime's undecoded one", out)
		}
	})
}

// benchImageStatus measures ImageStatus(image) through s's interceptors
// and handler; check, if set, looks at each answer.
func benchImageStatus(b *testing.B, s *Server, image string, check func(any)) {
	gs := s.NewGRPCServer()
	defer gs.Stop()
	req, err := proto.Marshal(&runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: image}})
	if err != nil {
		b.Fatal(err)
	}
	dec := func(m any) error { m.(*frame).data = req; return nil }
	chain := s.unaryInterceptor()
	b.ReportAllocs()
	for b.Loop() {
		out, err := imageStatusHandler(s, context.Background(), dec, chain)
		if err != nil {
			b.Fatal(err)
		}
		if check != nil {
			check(out)
		}
	}
}

// BenchmarkImageStatusServerByName is BenchmarkImageStatusServer for a
// name with an alias: the runtime is asked by image id, and its answer
// translated.
func BenchmarkImageStatusServerByName(b *testing.B) {
	const mirror = "127.0.0.1:5000/mirror/team/app-00000"
	answer, err := proto.Marshal(&runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{
		Id: fmt.Sprintf("sha256:%064x", 1), RepoTags: []string{mirror + ":v1"},
		RepoDigests: []string{mirror + fmt.Sprintf("@sha256:%064x", 1<<32)}, Size: 1234,
	}})
	if err != nil {
		b.Fatal(err)
	}
	benchImageStatus(b, benchServerWith(b, 5000, canned(answer)), "docker.io/team/app-00000:v1", nil)
}

// BenchmarkListImagesServer is the proxy's own work on an unfiltered
// ListImages of 5,000 images, all but one aliased, as containerd answers
// it: about 230 bytes an image, in another order on every call.
func BenchmarkListImagesServer(b *testing.B) {
	const n = 5000
	listing := &runtimeapi.ListImagesResponse{}
	for i := range n {
		mirror := fmt.Sprintf("127.0.0.1:5000/mirror/team/app-%05d", i)
		listing.Images = append(listing.Images, &runtimeapi.Image{
			Id:          fmt.Sprintf("sha256:%064x", i+1),
			RepoTags:    []string{mirror + ":v1"},
			RepoDigests: []string{mirror + fmt.Sprintf("@sha256:%064x", i+1<<32)},
			Size:        123456789,
			Spec:        &runtimeapi.ImageSpec{Image: fmt.Sprintf("sha256:%064x", i+1)},
		})
	}
	var answers [][]byte
	r := rand.New(rand.NewPCG(1, 2))
	for range 4 {
		r.Shuffle(n, func(i, j int) { listing.Images[i], listing.Images[j] = listing.Images[j], listing.Images[i] })
		raw, err := proto.Marshal(listing)
		if err != nil {
			b.Fatal(err)
		}
		answers = append(answers, raw)
	}
	s := benchServerWith(b, n-1, canned(answers...))
	gs := s.NewGRPCServer()
	defer gs.Stop()
	dec := func(m any) error { m.(*frame).data = nil; return nil }
	chain := s.unaryInterceptor()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := listImagesHandler(s, context.Background(), dec, chain); err != nil {
			b.Fatal(err)
		}
	}
}
