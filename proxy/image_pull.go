package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"go.podman.io/image/v5/docker/reference"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/metrics"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
)

// WithAttemptTimeout bounds each mirror attempt that has another candidate
// after it, so a stalled mirror costs d, not the caller's whole deadline.
// The last candidate always gets the caller's full deadline. 0 = no bound.
func WithAttemptTimeout(d time.Duration) Option { return func(s *Server) { s.attemptTimeout = d } }

// resultTimeout is the attempt result of a mirror abandoned after the
// attempt timeout; it says the mirror stalled, unlike a caller's cancel.
const resultTimeout = "timeout"

// PullImage resolves the reference through the mirror rules and asks the
// runtime to pull each candidate in turn until one succeeds.
func (s *Server) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	image := req.GetImage().GetImage()
	if image == "" {
		return nil, status.Error(codes.InvalidArgument, "PullImage: image spec with an image reference is required")
	}
	res, err := s.resolver.Resolve(image)
	if err != nil {
		var blocked *resolver.BlockedError
		switch {
		case errors.As(err, &blocked):
			s.metrics.Pulls.WithLabelValues(ruleLabel(blocked.Rule), metrics.ResultBlocked).Inc()
			return nil, status.Error(codes.PermissionDenied, err.Error())
		case errors.Is(err, resolver.ErrInvalidReference):
			s.metrics.Pulls.WithLabelValues(metrics.RegistryNone, metrics.ResultInvalid).Inc()
			return nil, status.Error(codes.InvalidArgument, err.Error())
		default:
			return nil, status.Errorf(codes.Internal, "resolve %q: %v", image, err)
		}
	}

	resp, err := s.flights.do(ctx, pullKey(res.Original, req), func(ctx context.Context) (*runtimeapi.PullImageResponse, error) {
		return s.pull(ctx, req, res)
	})
	if ctxErr := ctx.Err(); ctxErr != nil {
		return nil, status.FromContextError(ctxErr).Err()
	}
	return resp, err
}

// pull tries the candidates in order. It runs once per distinct pull, shared
// by every caller waiting for it.
func (s *Server) pull(ctx context.Context, req *runtimeapi.PullImageRequest, res *resolver.Resolution) (*runtimeapi.PullImageResponse, error) {
	registry := ruleLabel(res.Rule)
	original := res.Original.String()
	var failures []string
	var last error
	for i, c := range res.Candidates {
		if i > 0 {
			s.metrics.Fallbacks.WithLabelValues(registry).Inc()
		}
		log := s.log.WithFields(logrus.Fields{
			"image": original, "candidate": c.Ref.String(), "mirror": mirrorLabel(c), "attempt": i + 1,
		})
		resp, err := s.attempt(ctx, req, res, c, i == len(res.Candidates)-1, log)
		if err == nil {
			if c.Source && i > 0 {
				s.metrics.SourcePulls.WithLabelValues(registry).Inc()
			}
			if err := s.remember(res.Original, c, resp.GetImageRef()); err != nil {
				s.metrics.Pulls.WithLabelValues(registry, metrics.ResultError).Inc()
				return nil, status.Errorf(codes.Internal, "pulled %s as %s but cannot record its original name: %v", original, c.Ref, err)
			}
			s.metrics.Pulls.WithLabelValues(registry, metrics.ResultSuccess).Inc()
			return resp, nil
		}
		if ctx.Err() != nil {
			s.metrics.Pulls.WithLabelValues(registry, metrics.ResultCanceled).Inc()
			return nil, ctx.Err()
		}
		last = err
		failures = append(failures, fmt.Sprintf("%s (%s): %s", c.Ref, describe(c), status.Convert(err).Message()))
	}
	s.metrics.Pulls.WithLabelValues(registry, metrics.ResultError).Inc()
	code := status.Code(last)
	if code == codes.OK {
		code = codes.Unknown
	}
	return nil, status.Errorf(code, "pull %s: all %d candidates failed: %s", original, len(failures), strings.Join(failures, "; "))
}

// attempt asks the runtime to pull one candidate, with the credentials that
// belong to the candidate's host, and reports the attempt.
func (s *Server) attempt(ctx context.Context, req *runtimeapi.PullImageRequest, res *resolver.Resolution, c resolver.Candidate, last bool, log logrus.FieldLogger) (*runtimeapi.PullImageResponse, error) {
	auth, err := s.authFor(c, res.Original, req.GetAuth())
	if err != nil {
		log.WithError(err).Warn("no credentials for candidate host; pulling anonymously")
	}
	actx, bounded := ctx, s.attemptTimeout > 0 && !last
	if bounded {
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeout(ctx, s.attemptTimeout)
		defer cancel()
	}
	start := time.Now()
	resp, err := s.images.PullImage(actx, &runtimeapi.PullImageRequest{
		Image:         withImage(req.GetImage(), c.Ref.String()),
		Auth:          auth,
		SandboxConfig: req.GetSandboxConfig(),
	})
	d := time.Since(start)
	result := metrics.ResultSuccess
	switch {
	case err == nil:
	case ctx.Err() != nil:
		result = metrics.ResultCanceled
	case bounded && (actx.Err() != nil || status.Code(err) == codes.DeadlineExceeded):
		// The runtime may report the deadline it was sent before the
		// local context notices it.
		result = resultTimeout
	default:
		result = metrics.ResultError
	}
	s.metrics.ObserveAttempt(ruleLabel(res.Rule), mirrorLabel(c), result, d)
	log = log.WithFields(logrus.Fields{"duration": d.Round(time.Millisecond).String(), "result": result})
	if err != nil {
		log.WithField("error", status.Convert(err).Message()).Warn("pull attempt failed")
		if result == resultTimeout {
			return nil, status.Errorf(codes.DeadlineExceeded, "attempt timed out after %s", s.attemptTimeout)
		}
		return nil, err
	}
	log.WithField("image_id", resp.GetImageRef()).Info("pull attempt succeeded")
	return resp, nil
}

// authFor keeps credentials on the host they were issued for. The caller's
// AuthConfig (kubelet's pull secret) belongs to the image's own registry and
// only goes there; any other host gets what is configured for it, or none.
func (s *Server) authFor(c resolver.Candidate, original reference.Named, callerAuth *runtimeapi.AuthConfig) (*runtimeapi.AuthConfig, error) {
	if reference.Domain(c.Ref) == reference.Domain(original) {
		return callerAuth, nil
	}
	return s.creds.Lookup(c.Ref)
}

// remember records the original name when the runtime stored the image under
// another one, and forgets an older alias when it stored it under the
// original name itself.
func (s *Server) remember(original reference.Named, c resolver.Candidate, imageID string) error {
	name := original.String()
	if c.Ref.String() == name {
		if _, ok := s.aliases.Get(name); ok {
			return s.aliases.Delete(name)
		}
		return nil
	}
	return s.aliases.Put(store.Alias{Name: name, ImageID: imageID, Mirror: c.Ref.String(), Created: time.Now().UTC()})
}

// pullKey identifies pulls that may share one runtime pull: same image, same
// runtime handler, same credentials.
func pullKey(original reference.Named, req *runtimeapi.PullImageRequest) string {
	var auth string
	if a := req.GetAuth(); a != nil {
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(a)
		sum := sha256.Sum256(b)
		auth = hex.EncodeToString(sum[:])
	}
	return original.String() + "\x00" + req.GetImage().GetRuntimeHandler() + "\x00" + auth
}

func ruleLabel(rule string) string {
	if rule == "" {
		return metrics.RegistryNone
	}
	return rule
}

func mirrorLabel(c resolver.Candidate) string {
	if c.Source {
		return metrics.MirrorSource
	}
	return c.Location
}

func describe(c resolver.Candidate) string {
	if c.Source {
		return "source"
	}
	return "mirror " + c.Location
}
