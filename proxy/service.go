package proxy

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/metrics"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
)

// Resolver turns an image reference into the ordered pull candidates, and
// a name the runtime holds back into the originals it may stand for.
type Resolver interface {
	Resolve(image string) (*resolver.Resolution, error)
	Originals(ref string) []string
}

// AliasStore is the persistent table of original name → image pulled from a
// mirror. Reads are served from memory; they sit on the hot path.
type AliasStore interface {
	Get(name string) (store.Alias, bool)
	ByImage(id string) []store.Alias
	ByMirror(mirrorRef string) []store.Alias
	ByRepository(repo string) []store.Alias
	Put(a store.Alias) error
	Delete(names ...string) error
	DeleteImage(id string) ([]store.Alias, error)
	// Restore adds the aliases whose names are not recorded yet.
	Restore(as []store.Alias) (int, error)
	// ImageIDs lists the image ids aliases and kept names point at.
	ImageIDs() []string
	// KeepName records a mirror name that was asked for by itself, which
	// translation then shows; Kept reports one.
	KeepName(name, id string) error
	Kept(name, id string) bool
	// HasImage reports whether an alias points at image id.
	HasImage(id []byte) bool
	// Images counts the image ids aliases point at, with the table's
	// generation, which changes with the table.
	Images() (n int, generation uint64)
	// Generation is the table's generation alone, read without a lock; a
	// change is in the table before its generation is.
	Generation() uint64
}

// Server implements runtimeapi.ImageServiceServer on top of a runtime's
// ImageService, translates the image names in the RuntimeService answers
// that report a container's image, and relays every other method to the
// runtime's connection.
type Server struct {
	runtimeapi.UnimplementedImageServiceServer

	images   runtimeapi.ImageServiceClient
	conn     grpc.ClientConnInterface
	resolver Resolver
	aliases  AliasStore
	creds    Credentials
	metrics  *metrics.Metrics
	log      logrus.FieldLogger
	flights  flights
	names    nameCache
	pruning  atomic.Bool // a pruneStale is running
	listings listings
	statuses statuses

	attemptTimeout time.Duration
	stallTimeout   time.Duration
	progress       ingestMeter
	progressOnce   sync.Once
	prober         prober
	probeOverlap   time.Duration
	probeDelay     time.Duration
	cooldown       time.Duration
	gate           *mirrorGate

	tagCheck *tagChecker // nil: no tag check (tag_check.go)

	indexes  indexReader // nil: no digest substitution
	indexDir string
	platform Platform
}

// New returns a Server forwarding to the runtime behind conn.
func New(conn grpc.ClientConnInterface, r Resolver, aliases AliasStore, opts ...Option) *Server {
	s := &Server{
		images:   runtimeapi.NewImageServiceClient(conn),
		conn:     conn,
		resolver: r,
		aliases:  aliases,
		creds:    noCredentials{},
		metrics:  metrics.New(),
		log:      logrus.StandardLogger(),
		cooldown: DefaultCooldown,
		progress: newContainerdIngests(conn),

		stallTimeout: DefaultStallTimeout,

		probeOverlap: DefaultProbeOverlap,
		probeDelay:   probeDelay,
	}
	for _, o := range opts {
		o(s)
	}
	s.gate = &mirrorGate{
		recent:  newRecency(time.Now),
		prober:  s.prober,
		overlap: s.probeOverlap,
		delay:   s.probeDelay,
		metrics: s.metrics,

		patience: s.stallTimeout,
	}
	s.gate.breaker = newBreaker(s.cooldown, time.Now, s.gate.healthChanged(s.log))
	s.flights.m = map[string]*flight{}
	return s
}

// NewGRPCServer returns a gRPC server serving the ImageService and the
// RuntimeService calls that report container images, relaying every other
// method (the rest of the RuntimeService) to the runtime, with the codec the
// undecoded paths need, kubelet's message size limits, a few stream workers
// (streamWorkers), and the grpc_server_* metrics of every method
// (WithMetrics) initialised. Calls to methods CRI does not define are still
// relayed, but counted under one UnknownMethod so that no client can grow
// the metrics without bound. opts add to these.
func (s *Server) NewGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	gs := grpc.NewServer(append([]grpc.ServerOption{
		grpc.ForceServerCodecV2(rawCodec()),
		grpc.UnknownServiceHandler(s.relay),
		grpc.MaxRecvMsgSize(MaxMsgSize),
		grpc.MaxSendMsgSize(MaxMsgSize),
		grpc.NumStreamWorkers(streamWorkers()),
		grpc.ChainUnaryInterceptor(s.unaryInterceptor()),
		grpc.ChainStreamInterceptor(boundedStream(s.metrics.GRPC.StreamServerInterceptor())),
	}, opts...)...)
	gs.RegisterService(imageServiceDesc(), s)
	gs.RegisterService(runtimeServiceDesc(), s)
	s.metrics.GRPC.InitializeMetrics(gs)
	return gs
}

// streamWorkers is how many goroutines serve calls, each call after
// another: a new goroutine per call (gRPC's default) starts with a small
// stack and grows it, by copying, on every call that goes as deep as the
// proxy's handlers do. Calls past the workers, while all are busy (a long
// pull, a relayed stream), get a goroutine of their own as before.
func streamWorkers() uint32 { return uint32(max(4, 2*runtime.GOMAXPROCS(0))) }

// unaryInterceptor runs around every unary call NewGRPCServer serves: the
// grpc_server_* metrics, under a bounded method name.
func (s *Server) unaryInterceptor() grpc.UnaryServerInterceptor {
	return boundedUnary(s.metrics.GRPC.UnaryServerInterceptor())
}

// imageServiceDesc is the generated ImageService descriptor whose
// ImageStatus and ListImages handlers take the request undecoded
// (image_status_raw.go, image_list_raw.go). It needs the server codec
// (rawCodec) that passes frames through.
func imageServiceDesc() *grpc.ServiceDesc {
	d := runtimeapi.ImageService_ServiceDesc
	d.Methods = append([]grpc.MethodDesc(nil), d.Methods...)
	for i := range d.Methods {
		switch d.Methods[i].MethodName {
		case "ImageStatus":
			d.Methods[i].Handler = imageStatusHandler
		case "ListImages":
			d.Methods[i].Handler = listImagesHandler
		}
	}
	return &d
}
