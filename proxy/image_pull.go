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

// Attempt results besides success, error and canceled.
const (
	// resultTimeout: a mirror abandoned after the attempt timeout; it
	// stalled, unlike a caller's cancel.
	resultTimeout = "timeout"
	// resultSkipped: a mirror held back by its breaker; no request was made.
	resultSkipped = "skipped"
	// resultMissing: the probe found no such manifest on the mirror.
	resultMissing = "missing"
	// resultUnreachable: the probe could not reach the mirror.
	resultUnreachable = "unreachable"
)

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
		isLast := i == len(res.Candidates)-1
		log := s.log.WithFields(logrus.Fields{
			"image": original, "candidate": c.Ref.String(), "mirror": mirrorLabel(c), "attempt": i + 1,
		})
		var resp *runtimeapi.PullImageResponse
		var err error
		if c.Source {
			resp, err = s.attempt(ctx, req, res, c, isLast, log)
		} else {
			var skip string
			if resp, skip, err = s.tryMirror(ctx, req, res, c, isLast, log); skip != "" {
				failures = append(failures, fmt.Sprintf("%s (%s): %s", c.Ref, describe(c), skip))
				continue
			}
		}
		if err != nil && ctx.Err() == nil && s.runtimeDown(ctx, err) {
			// The proxy lost the runtime, not the mirror: no candidate can
			// do better, and the mirror must not be blamed for it.
			s.health.release(c.Location)
			s.metrics.Pulls.WithLabelValues(registry, metrics.ResultError).Inc()
			return nil, status.Errorf(codes.Unavailable, "pull %s: container runtime unavailable: %s", original, status.Convert(err).Message())
		}
		if !c.Source {
			switch {
			case err == nil:
				s.health.success(c.Location)
			case ctx.Err() == nil && mirrorFault(err):
				s.health.failure(c.Location)
			case ctx.Err() == nil:
				s.health.release(c.Location)
				s.health.missed(c.Location) // it answered "no": probe first next time
			default:
				s.health.release(c.Location)
			}
		}
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
	if last == nil {
		// Every candidate was skipped before reaching the runtime.
		last = status.Error(codes.Unavailable, "no candidate reached the runtime")
	}
	s.metrics.Pulls.WithLabelValues(registry, metrics.ResultError).Inc()
	code := status.Code(last)
	if code == codes.OK {
		code = codes.Unknown
	}
	msg := fmt.Sprintf("pull %s: all %d candidates failed: %s", original, len(failures), strings.Join(failures, "; "))
	if res.NeverContactSource {
		msg += fmt.Sprintf("; the source is not tried: rule prefix %q has blocked = true with mirrors (never contact the source)", res.Rule)
	}
	return nil, status.Error(code, msg)
}

// runtimeDown tells an attempt that failed because the runtime itself is
// unreachable (the proxy's own connection, Unavailable) from a runtime that
// answered with the registry's failure: it asks the runtime once more.
func (s *Server) runtimeDown(ctx context.Context, err error) bool {
	if status.Code(err) != codes.Unavailable {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return s.Ready(ctx) != nil
}

// tryMirror asks the runtime to pull a mirror candidate unless the mirror is
// held back: its breaker is open, or the manifest probe finds the manifest
// missing or the mirror unreachable. It returns the pull's result, or why
// the mirror was skipped. The last candidate is neither held back nor
// probed: trying it is better than failing for sure.
//
// The probe runs before the runtime is asked, so a mirror that is down, new,
// or just missed a tag is not handed to the runtime blind. But a mirror
// whose last answer within the probe overlap was a hit (it served a pull,
// or its probe found the manifest) is pulled from at once and, if the pull
// is still running after probeDelay, probed alongside it; a verdict of
// missing or unreachable stops that pull. That spares a healthy mirror the
// probe's round trips on every pull.
func (s *Server) tryMirror(ctx context.Context, req *runtimeapi.PullImageRequest, res *resolver.Resolution, c resolver.Candidate, last bool, log logrus.FieldLogger) (*runtimeapi.PullImageResponse, string, error) {
	if !s.health.allow(c.Location) && !last {
		s.metrics.Attempts.WithLabelValues(ruleLabel(res.Rule), mirrorLabel(c), resultSkipped).Inc()
		log.WithField("result", resultSkipped).Info("mirror skipped: it failed recently")
		return nil, "skipped: failed recently, cooling down", nil
	}
	if s.prober == nil || last {
		resp, err := s.attempt(ctx, req, res, c, last, log)
		return resp, "", err
	}
	if s.health.heardWithin(c.Location, s.probeOverlap) {
		return s.pullWithProbe(ctx, req, res, c, log.WithField("probe_mode", probeAlongside))
	}
	log = log.WithField("probe_mode", probeBefore)
	start := time.Now()
	found, err := s.prober.Probe(ctx, c)
	if ctx.Err() == nil {
		s.metrics.Probes.WithLabelValues(mirrorLabel(c), probeBefore, found.String()).Inc()
	}
	if skip := s.judge(ctx, res, c, found, err, time.Since(start), log); skip != "" {
		return nil, skip, nil
	}
	resp, err := s.attempt(ctx, req, res, c, false, log)
	return resp, "", err
}

// errProbeVeto stops a runtime pull the probe found pointless.
var errProbeVeto = errors.New("stopped: the manifest probe found the mirror missing the manifest or unreachable")

// Probe modes, in logs and in cri_mirror_probes_total.
const (
	probeBefore    = "before"
	probeAlongside = "alongside"
)

// pullWithProbe asks the runtime to pull c and, if the pull is still running
// after probeDelay, probes c alongside it: a verdict of missing or
// unreachable that comes before the pull's own result stops the pull and
// skips the mirror.
func (s *Server) pullWithProbe(ctx context.Context, req *runtimeapi.PullImageRequest, res *resolver.Resolution, c resolver.Candidate, log logrus.FieldLogger) (*runtimeapi.PullImageResponse, string, error) {
	pullCtx, veto := context.WithCancelCause(ctx)
	defer veto(nil)
	probeCtx, stopProbe := context.WithCancel(ctx)
	type verdict struct {
		found probeResult
		err   error
		took  time.Duration
	}
	done := make(chan verdict, 1)
	go func() {
		wait := time.NewTimer(s.probeDelay)
		defer wait.Stop()
		select {
		case <-probeCtx.Done(): // the pull ended first: no probe needed
			done <- verdict{}
			return
		case <-wait.C:
		}
		start := time.Now()
		found, err := s.prober.Probe(probeCtx, c)
		if probeCtx.Err() != nil {
			done <- verdict{} // stopped with the pull: says nothing
			return
		}
		s.metrics.Probes.WithLabelValues(mirrorLabel(c), probeAlongside, found.String()).Inc()
		if found == probeAbsent || found == probeUnreachable {
			veto(errProbeVeto)
		}
		done <- verdict{found, err, time.Since(start)}
	}()
	resp, err := s.attempt(pullCtx, req, res, c, false, log)
	stopProbe()
	v := <-done
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(pullCtx), errProbeVeto) {
		return nil, s.judge(ctx, res, c, v.found, v.err, v.took, log) + " (the runtime's pull was stopped)", nil
	}
	return resp, "", err // the pull's own result decides the mirror's health
}

// judge reports a probe's verdict and returns why it skips the mirror, or ""
// when the runtime should pull it.
func (s *Server) judge(ctx context.Context, res *resolver.Resolution, c resolver.Candidate, found probeResult, err error, took time.Duration, log logrus.FieldLogger) string {
	registry, mirror := ruleLabel(res.Rule), mirrorLabel(c)
	log = log.WithFields(logrus.Fields{"probe": found.String(), "probe_duration": took.Round(time.Millisecond).String()})
	switch found {
	case probePresent:
		s.health.heard(c.Location)
	case probeAbsent:
		s.health.missed(c.Location)
		s.health.release(c.Location)
		s.metrics.ObserveAttempt(registry, mirror, resultMissing, took)
		s.metrics.AttemptFailures.WithLabelValues(registry, mirror, metrics.ReasonNotFound).Inc()
		log.WithField("result", resultMissing).Info("mirror skipped: probe found no such manifest")
		return "skipped: the probe found no such manifest"
	case probeUnreachable:
		if ctx.Err() != nil {
			return ""
		}
		s.health.failure(c.Location)
		s.metrics.ObserveAttempt(registry, mirror, resultUnreachable, took)
		reason := metrics.ReasonConnection
		if err != nil && failureReason(err) == metrics.ReasonTimeout {
			reason = metrics.ReasonTimeout
		}
		s.metrics.AttemptFailures.WithLabelValues(registry, mirror, reason).Inc()
		log.WithField("result", resultUnreachable).WithError(err).Warn("mirror skipped: probe could not reach it")
		if err != nil {
			return "skipped: the probe could not reach it: " + err.Error()
		}
		return "skipped: the probe could not reach it"
	case probeInconclusive:
		log.WithError(err).Debug("probe inconclusive; the runtime decides")
	}
	return ""
}

// mirrorFault tells a failing mirror from a mirror that answered "no": a
// cache miss or refused credentials must not hold a healthy mirror back.
func mirrorFault(err error) bool {
	if status.Code(err) == codes.InvalidArgument {
		return false // the request, not the mirror
	}
	switch failureReason(err) {
	case metrics.ReasonNotFound, metrics.ReasonUnauthorized:
		return false
	}
	return true
}

// failureReason sorts a failed attempt for cri_mirror_pull_attempt_failures_total.
// Runtimes report registry errors as text (containerd: "...: 401
// Unauthorized", "...: not found", "unexpected commit digest ..."), so the
// text decides where the code does not.
func failureReason(err error) string {
	switch status.Code(err) {
	case codes.NotFound:
		return metrics.ReasonNotFound
	case codes.Unauthenticated, codes.PermissionDenied:
		return metrics.ReasonUnauthorized
	case codes.DeadlineExceeded:
		return metrics.ReasonTimeout
	}
	msg := strings.ToLower(status.Convert(err).Message())
	has := func(words ...string) bool {
		for _, w := range words {
			if strings.Contains(msg, w) {
				return true
			}
		}
		return false
	}
	switch {
	case has("not found", "manifest unknown", "name unknown"):
		return metrics.ReasonNotFound
	case has("401 unauthorized", "403 forbidden", "unauthorized", "access denied", "denied:"):
		return metrics.ReasonUnauthorized
	case has("digest", "size") && has("mismatch", "unexpected", "does not match", "failed precondition", "invalid"):
		return metrics.ReasonBadContent
	case has("500 internal", "502 bad gateway", "503 service", "504 gateway", "status code 5", "statuscode: 5"):
		return metrics.ReasonServerError
	case has("timeout", "deadline exceeded", "timed out"):
		return metrics.ReasonTimeout
	case has("connection refused", "connection reset", "broken pipe", "eof", "no such host", "unreachable", "no route to host", "closed"):
		return metrics.ReasonConnection
	}
	return metrics.ReasonOther
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
	if err != nil && errors.Is(context.Cause(ctx), errProbeVeto) {
		return nil, err // stopped by the probe, whose verdict the caller reports
	}
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
	switch result {
	case metrics.ResultError:
		s.metrics.AttemptFailures.WithLabelValues(ruleLabel(res.Rule), mirrorLabel(c), failureReason(err)).Inc()
	case resultTimeout:
		s.metrics.AttemptFailures.WithLabelValues(ruleLabel(res.Rule), mirrorLabel(c), metrics.ReasonTimeout).Inc()
	}
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
