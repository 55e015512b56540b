package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
)

// cannedConn is a runtime connection that answers every unary call with the
// same undecoded message, so that a benchmark measures the proxy's own work
// on a call and not a transport's.
type cannedConn struct{ answer []byte }

func (c cannedConn) Invoke(_ context.Context, _ string, _, reply any, _ ...grpc.CallOption) error {
	f, ok := reply.(*frame)
	if !ok {
		return errors.New("cannedConn answers undecoded calls only")
	}
	f.data = c.answer
	return nil
}

func (cannedConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, errors.New("cannedConn has no streams")
}

// benchServer is a Server with n aliases (n images, one name each) in a real
// store, in front of a runtime that answers ImageStatus with image id.
func benchServer(b *testing.B, n int, id string) *Server {
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
	answer, err := proto.Marshal(&runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{
		Id: id, RepoTags: []string{"registry.k8s.io/pause:3.10"}, Size: 1234,
	}})
	if err != nil {
		b.Fatal(err)
	}
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	return New(cannedConn{answer: answer}, nil, st, WithLogger(quiet))
}

// BenchmarkImageStatusServer is the proxy's own work on a pass-through
// ImageStatus (a name without alias, an image without alias) with 5,000
// aliases in the table: the interceptors and the handler, without the
// transport on either side.
func BenchmarkImageStatusServer(b *testing.B) {
	s := benchServer(b, 5000, fmt.Sprintf("sha256:%064x", 1<<40))
	gs := s.NewGRPCServer()
	defer gs.Stop()
	req, err := proto.Marshal(&runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "registry.k8s.io/pause:3.10"}})
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
		if _, ok := out.(*frame); !ok {
			b.Fatalf("answer %T, want the runtime's undecoded one", out)
		}
	}
}
