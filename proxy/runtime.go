package proxy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// MaxMsgSize is the largest CRI message accepted or sent, in both
// directions: the limit kubelet itself uses.
const MaxMsgSize = 16 << 20

// DialRuntime opens a lazy client connection to the runtime's CRI socket.
// endpoint is "unix:///path" or a bare path. The connection is not waited
// for: the proxy starts even if the runtime is not up yet, and /readyz says
// so.
func DialRuntime(endpoint string) (*grpc.ClientConn, error) {
	path, err := SocketPath(endpoint)
	if err != nil {
		return nil, fmt.Errorf("runtime endpoint: %w", err)
	}
	conn, err := grpc.NewClient("unix://"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMsgSize), grpc.MaxCallSendMsgSize(MaxMsgSize)),
		// A restarted runtime is a local socket coming back within seconds:
		// reconnect quickly instead of gRPC's default backoff of up to two
		// minutes, during which every call would fail.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("runtime endpoint %s: %w", endpoint, err)
	}
	return conn, nil
}

// SocketPath returns the file path of a "unix://" endpoint (or a bare
// absolute path). Other schemes are refused: CRI is served on unix sockets
// only.
func SocketPath(endpoint string) (string, error) {
	path := endpoint
	if rest, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		path = rest
	} else if strings.Contains(endpoint, "://") {
		return "", fmt.Errorf("%q: only unix:// endpoints are supported", endpoint)
	}
	if !strings.HasPrefix(path, "/") {
		return "", fmt.Errorf("%q: socket path must be absolute", endpoint)
	}
	return path, nil
}

// Ready reports whether the runtime answers its ImageService. It is the
// proxy's readiness: without the runtime every image call fails.
func (s *Server) Ready(ctx context.Context) error {
	if _, err := s.images.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{}); err != nil {
		return fmt.Errorf("runtime not answering: %w", err)
	}
	return nil
}
