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
	crierrors "k8s.io/cri-api/pkg/errors"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/metrics"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
)

// PullImage resolves the reference through the mirror rules and asks the
// runtime to pull each candidate in turn until one succeeds. Each call is
// counted once in cri_mirror_pulls_total, with its own result.
func (s *Server) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (_ *runtimeapi.PullImageResponse, err error) {
	registry, result := metrics.RegistryNone, metrics.ResultError
	defer func() { s.metrics.Pulls.WithLabelValues(registry, result).Inc() }()

	image := req.GetImage().GetImage()
	if image == "" {
		result = metrics.ResultInvalid
		return nil, status.Error(codes.InvalidArgument, "PullImage: image spec with an image reference is required")
	}
	res, err := s.resolver.Resolve(image)
	if err != nil {
		var blocked *resolver.BlockedError
		switch {
		case errors.As(err, &blocked):
			registry, result = ruleLabel(blocked.Rule), metrics.ResultBlocked
			return nil, status.Error(codes.PermissionDenied, err.Error())
		case errors.Is(err, resolver.ErrInvalidReference):
			result = metrics.ResultInvalid
			return nil, status.Error(codes.InvalidArgument, err.Error())
		default:
			return nil, status.Errorf(codes.Internal, "resolve %q: %v", image, err)
		}
	}
	registry = ruleLabel(res.Rule)

	resp, err := s.flights.do(ctx, pullKey(res.Original, req), func(ctx context.Context) (*runtimeapi.PullImageResponse, error) {
		return s.pull(ctx, req, res)
	})
	if ctxErr := ctx.Err(); ctxErr != nil {
		result = metrics.ResultCanceled
		return nil, status.FromContextError(ctxErr).Err()
	}
	if err == nil {
		result = metrics.ResultSuccess
		s.keepOwnName(ctx, image, resp.GetImageRef())
	}
	return resp, err
}

// pull tries the candidates in order: the source straight at the runtime, a
// mirror through its gate. It runs once per distinct pull, shared by every
// caller waiting for it. A pull of a tag under a tag-check policy is
// checked against the source first (tag_check.go). A pull by digest that
// found the digest on no candidate goes on to the digest substitution
// (digest_substitute.go).
func (s *Server) pull(ctx context.Context, req *runtimeapi.PullImageRequest, res *resolver.Resolution) (*runtimeapi.PullImageResponse, error) {
	start := time.Now()
	checked, served, err := s.checkTag(ctx, req, res)
	if err != nil {
		s.logPull(res, "", 0, start, err)
		return nil, err
	}
	res = checked
	o := s.tryCandidates(ctx, req, res)
	switch {
	case o.resp != nil:
		if served != nil {
			served(o.served)
		}
		// Image is res.Original but for a short name resolved through
		// [aliases] or unqualified-search-registries.
		if err := s.remember(ctx, o.served.Image, o.served, o.resp); err != nil {
			return nil, status.Errorf(codes.Internal, "pulled %s as %s but cannot record its original name: %v", o.served.Image, o.served.Ref, err)
		}
		s.logPull(res, o.served.Ref.String(), o.attempts, start, nil)
		return o.resp, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case o.stop != nil:
		s.logPull(res, "", o.attempts, start, o.stop)
		return nil, o.stop
	}
	err = allFailed(res, o.tried, o.last, o.lastMissed)
	if o.missed {
		if resp, served, serr := s.substitute(ctx, req, res); serr != errNoSubstitution {
			if serr != nil {
				err = status.Errorf(status.Code(err), "%s; %v", status.Convert(err).Message(), serr)
			} else {
				s.logPull(res, served, o.attempts, start, nil)
				return resp, nil
			}
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	s.logPull(res, "", o.attempts, start, err)
	return nil, err
}

// outcome is how a run through the candidates ended.
type outcome struct {
	resp     *runtimeapi.PullImageResponse // the image, when a candidate served it
	served   resolver.Candidate            // the candidate that served it
	attempts int                           // candidates tried
	stop     error                         // set when no other candidate can do better
	tried    []string                      // why each candidate did not serve the pull
	last     error                         // the runtime's last answer
	missed   bool                          // a candidate answered it does not have the image
	// lastMissed: the runtime's last answer was that the candidate does not
	// have the image.
	lastMissed bool
}

// tryCandidates asks for res's candidates in order until one serves the
// pull, counting and logging each attempt.
func (s *Server) tryCandidates(ctx context.Context, req *runtimeapi.PullImageRequest, res *resolver.Resolution) outcome {
	registry := ruleLabel(res.Rule)
	var o outcome
	for i, c := range res.Candidates {
		if i > 0 {
			s.metrics.Fallbacks.WithLabelValues(registry).Inc()
		}
		isLast := i == len(res.Candidates)-1
		run := func(ctx context.Context) attempt { return s.attempt(ctx, req, res, c, isLast) }
		var a attempt
		if c.Source {
			a = run(ctx)
		} else {
			a = s.gate.try(ctx, res, c, isLast, run)
		}
		s.report(res, c, i+1, a)
		o.attempts = i + 1

		switch {
		case a.result == metrics.ResultSuccess:
			if c.Source && i > 0 {
				s.metrics.SourcePulls.WithLabelValues(registry).Inc()
			}
			o.resp, o.served = a.resp, c
			return o
		case a.runtimeDown:
			// The proxy lost the runtime, not the mirror: no candidate can do better.
			o.stop = status.Errorf(codes.Unavailable, "pull %s: container runtime unavailable: %s", res.Original, a.why)
			return o
		case ctx.Err() != nil:
			o.stop = ctx.Err()
			return o
		}
		if a.err != nil {
			o.last, o.lastMissed = a.err, a.result == metrics.ResultMissing
		}
		o.missed = o.missed || a.result == metrics.ResultMissing
		o.tried = append(o.tried, fmt.Sprintf("%s (%s): %s", c.Ref, describeCandidate(c), a.why))
	}
	return o
}

// allFailed is the error of a pull no candidate served: each candidate and
// why, with the code of the runtime's last answer. CRI-O answers every
// failure with Unknown; when that answer says the image is not there
// (lastMissed), the pull fails with NotFound, as in front of containerd.
// When it starts with one of the reasons kubelet reads from the start of an
// Unknown pull error's message (k8s.io/cri-api/pkg/errors: CRI-O's
// "RegistryUnavailable: ..."), the message starts with that reason too.
func allFailed(res *resolver.Resolution, tried []string, last error, lastMissed bool) error {
	code := codes.Unavailable // every candidate was skipped before reaching the runtime
	if last != nil {
		if code = status.Code(last); code == codes.OK {
			code = codes.Unknown
		}
		if code == codes.Unknown && lastMissed {
			code = codes.NotFound
		}
	}
	msg := fmt.Sprintf("pull %s: all %d candidates failed: %s", res.Original, len(tried), strings.Join(tried, "; "))
	if res.NeverContactSource {
		msg += fmt.Sprintf("; the source is not tried: rule prefix %q has blocked = true with mirrors (never contact the source)", res.Rule)
	}
	if code == codes.Unknown {
		if reason := kubeletReason(last); reason != nil {
			msg = reason.Error() + ": " + msg
		}
	}
	return status.Error(code, msg)
}

// kubeletReason is the reason a runtime's Unknown pull error names at the
// start of its message for kubelet to show (the pod waits with that reason,
// not ErrImagePull), or nil.
func kubeletReason(err error) error {
	msg := status.Convert(err).Message()
	for _, reason := range []error{crierrors.ErrRegistryUnavailable, crierrors.ErrSignatureValidationFailed} {
		if strings.HasPrefix(msg, reason.Error()) {
			return reason
		}
	}
	return nil
}

// attempt is how one candidate did: asked of the runtime, or answered by the
// mirror gate without it.
type attempt struct {
	result string // a metrics.AttemptResults value
	reason string // why it failed, for metrics.FailedAttemptResults
	took   time.Duration
	resp   *runtimeapi.PullImageResponse
	err    error  // the runtime's answer, nil if it was not asked or pulled
	why    string // for the caller's error, when it did not serve
	// runtimeDown: the runtime itself is unreachable; the candidate is not
	// to blame.
	runtimeDown bool
	probeMode   string // how the probe ran, if it did
	probe       string // the probe's verdict, when it decided the attempt
}

// mirrorFault tells a failing mirror from a mirror that answered "no": a
// cache miss or refused credentials must not hold a healthy mirror back.
func (a attempt) mirrorFault() bool {
	switch a.result {
	case metrics.ResultTimeout, metrics.ResultUnreachable:
		return true
	case metrics.ResultError:
		switch a.reason {
		case metrics.ReasonUnauthorized:
			return false
		case metrics.ReasonOther:
			// Runtimes answer InvalidArgument for a request they refuse
			// before contacting anyone; a mirror's bad answer comes with a
			// reason of its own, whatever the code.
			return status.Code(a.err) != codes.InvalidArgument
		}
		return true
	}
	return false
}

// attempt asks the runtime to pull one candidate, with the credentials that
// belong to the candidate's host.
func (s *Server) attempt(ctx context.Context, req *runtimeapi.PullImageRequest, res *resolver.Resolution, c resolver.Candidate, last bool) attempt {
	auth, err := s.authFor(c, res.Original, req.GetAuth())
	if err != nil {
		s.log.WithFields(logrus.Fields{"image": res.Original.String(), "candidate": c.Ref.String()}).WithError(err).
			Warn("no credentials for candidate host; pulling anonymously")
	}
	// A mirror with another candidate after it is abandoned when it stalls
	// (see watchProgress) or, if set, after the attempt timeout; the last
	// candidate gets the caller's whole deadline.
	actx, stalled := context.WithCancelCause(ctx)
	defer stalled(nil)
	bounded := s.attemptTimeout > 0 && !last
	if bounded {
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeout(actx, s.attemptTimeout)
		defer cancel()
	}
	if !last {
		defer s.watchProgress(actx, stalled)()
	}
	start := time.Now()
	resp, err := s.images.PullImage(actx, &runtimeapi.PullImageRequest{
		Image:         withImage(req.GetImage(), c.Ref.String()),
		Auth:          auth,
		SandboxConfig: req.GetSandboxConfig(),
	})
	a := attempt{took: time.Since(start), resp: resp, err: err}
	switch {
	case err == nil:
		a.result = metrics.ResultSuccess
		return a
	case ctx.Err() != nil:
		a.result = metrics.ResultCanceled
	case errors.Is(context.Cause(actx), errStalled):
		a.result, a.reason = metrics.ResultTimeout, metrics.ReasonTimeout
		a.err = status.Error(codes.DeadlineExceeded, context.Cause(actx).Error())
	case bounded && (actx.Err() != nil || status.Code(err) == codes.DeadlineExceeded):
		// The runtime may report the deadline it was sent before the
		// local context notices it.
		a.result, a.reason = metrics.ResultTimeout, metrics.ReasonTimeout
		a.err = status.Errorf(codes.DeadlineExceeded, "attempt timed out after %s", s.attemptTimeout)
	case status.Code(err) == codes.Unavailable && s.runtimeDown(ctx):
		a.result, a.reason, a.runtimeDown = metrics.ResultError, failureReason(err), true
	case isMiss(err):
		a.result = metrics.ResultMissing
	default:
		a.result, a.reason = metrics.ResultError, failureReason(err)
	}
	a.why = status.Convert(a.err).Message()
	return a
}

// report counts one attempt and logs it.
func (s *Server) report(res *resolver.Resolution, c resolver.Candidate, n int, a attempt) {
	registry, mirror := ruleLabel(res.Rule), mirrorLabel(c)
	if a.result == metrics.ResultSkipped {
		s.metrics.Attempts.WithLabelValues(registry, mirror, a.result).Inc()
	} else {
		s.metrics.ObserveAttempt(registry, mirror, a.result, a.took)
	}
	if a.reason != "" {
		s.metrics.AttemptFailures.WithLabelValues(registry, mirror, a.reason).Inc()
	}

	log := s.log.WithFields(logrus.Fields{
		"image": res.Original.String(), "candidate": c.Ref.String(), "mirror": mirror, "attempt": n,
		"result": a.result, "duration": a.took.Round(time.Millisecond),
	})
	if a.probeMode != "" {
		log = log.WithField("probe_mode", a.probeMode)
	}
	if a.probe != "" {
		log = log.WithField("probe", a.probe)
	}
	switch a.result {
	case metrics.ResultSuccess:
		log.WithField("image_ref", a.resp.GetImageRef()).Info("pull attempt succeeded")
	case metrics.ResultSkipped, metrics.ResultMissing:
		log.WithField("why", a.why).Info("candidate does not serve this pull")
	default:
		log.WithField("error", a.why).Warn("pull attempt failed")
	}
}

// logPull writes the one summary line of a shared pull.
func (s *Server) logPull(res *resolver.Resolution, servedBy string, attempts int, start time.Time, err error) {
	log := s.log.WithFields(logrus.Fields{
		"image": res.Original.String(), "attempts": attempts, "duration": time.Since(start).Round(time.Millisecond),
	})
	if err != nil {
		log.WithError(err).Warn("pull failed")
		return
	}
	log.WithField("served_by", servedBy).Info("pull done")
}

// runtimeDown tells an attempt that failed because the runtime itself is
// unreachable (the proxy's own connection, Unavailable) from a runtime that
// answered with the registry's failure: it asks the runtime once more.
func (s *Server) runtimeDown(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return s.Ready(ctx) != nil
}

// isMiss tells a candidate that answered it does not have the image.
func isMiss(err error) bool {
	if status.Code(err) == codes.NotFound {
		return true
	}
	msg := strings.ToLower(status.Convert(err).Message())
	return strings.Contains(msg, "not found") || strings.Contains(msg, "manifest unknown") || strings.Contains(msg, "name unknown")
}

// failureReason sorts a failed attempt for cri_mirror_pull_attempt_failures_total.
// Runtimes report registry errors as text (containerd: "...: 401
// Unauthorized", "unexpected commit digest ..."), so the text decides where
// the code does not.
func failureReason(err error) string {
	switch status.Code(err) {
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
//
// An alias needs the image id, and resp's image_ref is not always one:
// containerd answers with the id, CRI-O with a digest reference in the
// repository it pulled ("mirror/repo@sha256:…"). Such a name is replaced by
// the id in resp, so the caller (kubelet keeps image_ref for the container)
// never sees the mirror's name, and gets what containerd would answer.
func (s *Server) remember(ctx context.Context, original reference.Named, c resolver.Candidate, resp *runtimeapi.PullImageResponse) error {
	name := original.String()
	if c.Ref.String() == name {
		if _, ok := s.aliases.Get(name); ok {
			return s.aliases.Delete(name)
		}
		return nil
	}
	id, err := s.pulledImageID(ctx, c.Ref.String(), resp.GetImageRef())
	if err != nil {
		return err
	}
	resp.ImageRef = id
	return s.aliases.Put(store.Alias{Name: name, ImageID: id, Mirror: c.Ref.String(), Created: time.Now().UTC()})
}

// pulledImageID returns the runtime's id of the image it just pulled as ref,
// given the image_ref it answered: that, if it is an id, or else the id the
// runtime reports for that name (or for ref, if it named nothing).
func (s *Server) pulledImageID(ctx context.Context, ref, imageRef string) (string, error) {
	if isImageID(imageRef) {
		return imageRef, nil
	}
	name := imageRef
	if name == "" {
		name = ref
	}
	st, err := s.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: name}})
	if err != nil {
		return "", fmt.Errorf("ask the runtime for the id of %s: %w", name, err)
	}
	id := st.GetImage().GetId()
	if id == "" {
		return "", fmt.Errorf("the runtime has no image %s right after pulling it", name)
	}
	return id, nil
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

// describeCandidate names a candidate in error messages.
func describeCandidate(c resolver.Candidate) string {
	if c.Source {
		return "source"
	}
	return "mirror " + c.Location
}
