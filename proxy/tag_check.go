package proxy

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	crierrors "k8s.io/cri-api/pkg/errors"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/metrics"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
)

// The tag check: under a [tag-check] policy other than off, a pull of a tag
// from a rule with mirrors first asks the source for the tag's digest S (a
// HEAD, with the caller's credentials for the source), while each mirror is
// asked for its own answer M (a HEAD, with the mirror's credentials). Then:
//
//   - M == S: the mirror is pulled as mirror@S (match);
//   - M != S, but the manifest for the node's platform is the same in both
//     (a platform-filtered index on the mirror): mirror@M (platform_match);
//   - otherwise the mirror is not pulled (stale);
//   - a mirror that gave no answer is pulled as mirror@S: the runtime then
//     gets S or nothing;
//   - the source has no such tag (404): no mirror is pulled (its answers
//     count as stale), the source is, and fails as it would.
//
// Mirrors are pulled by digest so that what was compared is what is pulled,
// even if a tag moves meanwhile; the alias table still answers for the tag.
// The source itself is pulled by its tag, as without the check.
//
// The proxy waits for the source's answer and the mirrors' in order up to
// the first mirror it accepts; the ones after it are not waited for.
//
// When the source cannot be asked, source-required fails the pull and
// source-if-reachable goes on as without the check, pinning the first
// mirror that answers to the digest it answered, and compares the digest that served the pull with
// the one recorded for the tag before (trust on first use): a change is
// logged and counted in cri_mirror_tag_changes_total.

// tagRegistry asks registries about one tag for the tag check.
type tagRegistry interface {
	// Digest returns the digest of the manifest ref names, from a HEAD to
	// ref's host, with auth (nil: what the auth file holds for the host).
	Digest(ctx context.Context, res *resolver.Resolution, c resolver.Candidate, ref reference.Named, auth *runtimeapi.AuthConfig) (digest.Digest, error)
	// Manifest returns the bytes of the manifest ref names, from ref's host
	// alone (never a mirror of it), with auth as for Digest.
	Manifest(ctx context.Context, c resolver.Candidate, ref reference.Named, auth *runtimeapi.AuthConfig) ([]byte, error)
}

// TagRecords keeps the digest last seen per tag reference, for trust on
// first use. The alias store implements it.
type TagRecords interface {
	Tag(name string) (store.TagRecord, bool)
	PutTag(name, digest string) error
}

// tagChecker holds the tag check's settings; nil in a Server: no check.
type tagChecker struct {
	policy   *resolver.TagCheckPolicy
	timeout  time.Duration
	registry tagRegistry
	records  TagRecords // nil: nothing remembered
}

// tagHead is one registry's answer for the tag.
type tagHead struct {
	digest digest.Digest
	err    error
}

// errSourceNotContacted: the rule forbids contacting the source.
var errSourceNotContacted = errors.New("the rule never contacts the source (blocked = true with mirrors)")

// checkTag applies the tag check to a pull of res. It returns the
// resolution to pull (res itself when the check does not apply) and, for a
// pull that must record what served it, a function to call with the
// candidate that did.
func (s *Server) checkTag(ctx context.Context, req *runtimeapi.PullImageRequest, res *resolver.Resolution) (*resolver.Resolution, func(resolver.Candidate), error) {
	if s.tagCheck == nil {
		return res, nil, nil
	}
	image, ok := checkedImage(res)
	if !ok {
		return res, nil, nil
	}
	entry, _ := s.tagCheck.policy.For(image.Name())
	if entry.Mode == resolver.TagCheckOff || !hasMirror(res) {
		return res, nil, nil
	}
	registry := ruleLabel(res.Rule)
	log := s.log.WithFields(logrus.Fields{"image": image.String(), "tag_check": string(entry.Mode), "tag_check_prefix": entry.Prefix})

	start := time.Now()
	defer func() { s.metrics.TagCheckDuration.WithLabelValues(registry).Observe(time.Since(start).Seconds()) }()
	hctx, cancel := context.WithTimeout(ctx, s.tagCheck.timeout)
	defer cancel() // stops the HEADs no decision waited for
	answers := s.askTag(hctx, req, res)
	src := answers.source()
	if ctx.Err() != nil {
		return nil, nil, ctx.Err() // the caller left: nothing learnt about the source
	}
	out := *res
	out.Candidates = make([]resolver.Candidate, 0, len(res.Candidates))

	if src.err != nil && headAbsent(ctx, src.err) {
		// The source answered that it has no such tag: no mirror's
		// answer can be the source's. The source is still asked by the
		// runtime, whose answer the caller gets.
		log.WithError(src.err).Warn("tag check: the source has no such tag; not pulling it from a mirror")
		for i, c := range res.Candidates {
			if c.Source {
				out.Candidates = append(out.Candidates, c)
			} else if h, ok := answers.mirror(i); ok && h.err == nil {
				s.metrics.TagChecks.WithLabelValues(registry, metrics.TagCheckStale).Inc()
			}
		}
		return &out, nil, nil
	}
	if src.err != nil {
		s.metrics.TagChecks.WithLabelValues(registry, metrics.TagCheckSourceUnreachable).Inc()
		if entry.Mode == resolver.TagCheckSourceRequired {
			log.WithError(src.err).Warn("tag check: the source could not be asked for the tag's digest; not pulling")
			msg := fmt.Sprintf("pull %s: tag check policy %s (prefix %q) requires the source's digest for the tag, and the source %s could not be asked: %v",
				image, entry.Mode, entry.Prefix, sourceName(res), src.err)
			if errors.Is(src.err, errSourceNotContacted) {
				return nil, nil, status.Error(codes.FailedPrecondition, msg) // no retry helps: the rules forbid it
			}
			// A registry that may answer again, answered as the runtimes
			// answer an unreachable registry: Unknown (Unavailable would
			// read as the runtime being down), with the reason kubelet
			// shows first (CRI-O's form).
			return nil, nil, status.Error(codes.Unknown, crierrors.ErrRegistryUnavailable.Error()+": "+msg)
		}
		log.WithError(src.err).Info("tag check: the source could not be asked for the tag's digest; pulling the mirrors' answer, remembered per tag")
		// The first mirror that answers is pulled by the digest it
		// answered, which is what is remembered; the ones after it (tried
		// only if its pull fails) are not waited for.
		pinnedOne := false
		for i, c := range res.Candidates {
			if !c.Source && !pinnedOne {
				if h, ok := answers.mirror(i); ok && h.err == nil {
					c, pinnedOne = pinned(c, h.digest), true
				}
			}
			out.Candidates = append(out.Candidates, c)
		}
		return &out, func(served resolver.Candidate) { s.trustOnFirstUse(res, image, served, log) }, nil
	}

	s.recordTag(image.String(), src.digest, log)
	log = log.WithField("source_digest", src.digest.String())
	var srcIndex []byte // the source's manifest, read once if a mirror disagrees
	accepted := false   // a mirror before this one serves the source's image
	for i, c := range res.Candidates {
		if c.Source {
			out.Candidates = append(out.Candidates, c)
			continue
		}
		if accepted {
			// Tried only if the accepted mirror's pull fails: not waited
			// for, and pulled by S, so it serves S or nothing.
			out.Candidates = append(out.Candidates, pinned(c, src.digest))
			continue
		}
		h, asked := answers.mirror(i)
		switch {
		case !asked || h.err != nil:
			// No answer to compare: the runtime gets S or nothing.
			c = pinned(c, src.digest)
		case h.digest == src.digest:
			s.metrics.TagChecks.WithLabelValues(registry, metrics.TagCheckMatch).Inc()
			s.gate.recent.heard(c.Location)
			c, accepted = pinned(c, src.digest), true
		default:
			same, why := s.samePlatformImage(hctx, req, res, c, src.digest, h.digest, &srcIndex)
			mlog := log.WithFields(logrus.Fields{"mirror": c.Location, "mirror_digest": h.digest.String()})
			if !same {
				s.metrics.TagChecks.WithLabelValues(registry, metrics.TagCheckStale).Inc()
				mlog.WithField("why", why).Warn("tag check: the mirror answers the tag with another image than the source; not pulling from it")
				continue
			}
			s.metrics.TagChecks.WithLabelValues(registry, metrics.TagCheckPlatformMatch).Inc()
			mlog.WithField("platform", s.platform.String()).Info("tag check: the mirror's answer differs from the source's but holds the same image for this platform")
			s.gate.recent.heard(c.Location)
			c, accepted = pinned(c, h.digest), true
		}
		out.Candidates = append(out.Candidates, c)
	}
	return &out, nil, nil
}

// tagAnswers are the tag check's HEADs in flight; each arrives once on its
// channel (buffered: no sender waits for a reader that stopped waiting).
type tagAnswers struct {
	src     chan tagHead         // nil: the source is not asked
	mirrors map[int]chan tagHead // by candidate index; none for a mirror held back
	got     map[int]tagHead      // answers read so far
}

// source waits for the source's answer.
func (a *tagAnswers) source() tagHead {
	if a.src == nil {
		return tagHead{err: errSourceNotContacted}
	}
	return <-a.src
}

// mirror waits for the answer of candidate i; false if it was not asked.
func (a *tagAnswers) mirror(i int) (tagHead, bool) {
	if h, ok := a.got[i]; ok {
		return h, true
	}
	ch, ok := a.mirrors[i]
	if !ok {
		return tagHead{}, false
	}
	a.got[i] = <-ch
	return a.got[i], true
}

// askTag sends the HEADs at once, each bounded by ctx: the source (with the
// caller's credentials for it) and every mirror not held back by its
// breaker (with its own). The caller waits only for the answers it needs:
// the source's and the mirrors' up to the first it pulls.
func (s *Server) askTag(ctx context.Context, req *runtimeapi.PullImageRequest, res *resolver.Resolution) *tagAnswers {
	a := &tagAnswers{mirrors: map[int]chan tagHead{}, got: map[int]tagHead{}}
	for i, c := range res.Candidates {
		if !c.Source && s.gate.breaker.held(c.Location) {
			continue
		}
		auth, err := s.authFor(c, res.Original, req.GetAuth())
		if err != nil {
			auth = nil // the auth file's lookup failed: ask anonymously, as attempt does
		}
		ch := make(chan tagHead, 1)
		if c.Source {
			a.src = ch
		} else {
			a.mirrors[i] = ch
		}
		go func() {
			d, err := s.tagCheck.registry.Digest(ctx, res, c, c.Ref, auth)
			ch <- tagHead{digest: d, err: err}
		}()
	}
	return a
}

// samePlatformImage reports whether the source's manifest S and the
// mirror's manifest M hold the same image for the node's platform: the
// platform's child of each (or the manifest itself, when it is not an
// index) is the same digest. Both manifests are read by digest and
// checked against it. why says what differed, or what could not be read.
func (s *Server) samePlatformImage(ctx context.Context, req *runtimeapi.PullImageRequest, res *resolver.Resolution, mirror resolver.Candidate, S, M digest.Digest, srcIndex *[]byte) (bool, string) {
	if *srcIndex == nil {
		src, ok := sourceCandidate(res)
		if !ok {
			return false, "no source candidate to read the source's manifest from"
		}
		auth, _ := s.authFor(src, res.Original, req.GetAuth())
		b, err := s.readManifest(ctx, src, S, auth)
		if err != nil {
			return false, "source manifest: " + err.Error()
		}
		*srcIndex = b
	}
	auth, _ := s.authFor(mirror, res.Original, req.GetAuth())
	mb, err := s.readManifest(ctx, mirror, M, auth)
	if err != nil {
		return false, "mirror manifest: " + err.Error()
	}
	sc, sp, err := platformImage(*srcIndex, S, s.platform)
	if err != nil {
		return false, fmt.Sprintf("source manifest %s: %v", S, err)
	}
	mc, _, err := platformImage(mb, M, s.platform)
	if err != nil {
		return false, fmt.Sprintf("mirror manifest %s: %v", M, err)
	}
	if sc != mc {
		return false, fmt.Sprintf("for platform %s the source has %s, the mirror %s", sp, sc, mc)
	}
	return true, ""
}

// readManifest reads c's repository's manifest d and checks its digest.
func (s *Server) readManifest(ctx context.Context, c resolver.Candidate, d digest.Digest, auth *runtimeapi.AuthConfig) ([]byte, error) {
	ref, err := reference.WithDigest(reference.TrimNamed(c.Ref), d)
	if err != nil {
		return nil, err
	}
	b, err := s.tagCheck.registry.Manifest(ctx, c, ref, auth)
	if err != nil {
		return nil, err
	}
	if !provesDigest(b, d) {
		return nil, fmt.Errorf("%s answered %d bytes whose digest is not %s", ref, len(b), d)
	}
	return b, nil
}

// platformImage is the manifest the runtime pulls for platform p from the
// manifest b (whose digest is d): the platform's child of an index, or d
// itself for a single image's manifest.
func platformImage(b []byte, d digest.Digest, p Platform) (digest.Digest, string, error) {
	child, platform, err := chooseChild(b, p)
	if errors.Is(err, errNotIndex) {
		return d, p.String(), nil
	}
	return child, platform, err
}

// trustOnFirstUse compares the digest that served an unchecked pull of
// image with the one recorded for the tag, and records it.
func (s *Server) trustOnFirstUse(res *resolver.Resolution, image reference.Named, served resolver.Candidate, log logrus.FieldLogger) {
	dg, ok := served.Ref.(reference.Digested)
	if !ok || served.Source || s.tagCheck.records == nil {
		return
	}
	name := image.String()
	if old, ok := s.tagCheck.records.Tag(name); ok && old.Digest != dg.Digest().String() {
		s.metrics.TagChanges.WithLabelValues(ruleLabel(res.Rule)).Inc()
		log.WithFields(logrus.Fields{
			"mirror": served.Location, "digest": dg.Digest().String(), "recorded_digest": old.Digest, "recorded_at": old.Seen,
		}).Warn("tag check: the mirror's answer for the tag changed since it was recorded, and the source could not be asked")
	}
	s.recordTag(name, dg.Digest(), log)
}

// recordTag records d as the digest of tag reference name.
func (s *Server) recordTag(name string, d digest.Digest, log logrus.FieldLogger) {
	if s.tagCheck.records == nil {
		return
	}
	if err := s.tagCheck.records.PutTag(name, d.String()); err != nil {
		log.WithError(err).Warn("tag check: cannot record the tag's digest")
	}
}

// pinned is c pulling digest d of its repository in place of the tag.
func pinned(c resolver.Candidate, d digest.Digest) resolver.Candidate {
	if ref, err := reference.WithDigest(reference.TrimNamed(c.Ref), d); err == nil {
		c.Ref = ref
	}
	return c
}

// checkedImage is the tag reference a tag check of res is about: the image
// every candidate pulls (for a short name resolved through [aliases], the
// name it resolved to). A pull by digest, and a short name completed with
// several unqualified-search registries (each its own source), are not
// checked.
func checkedImage(res *resolver.Resolution) (reference.NamedTagged, bool) {
	if len(res.Candidates) == 0 {
		return nil, false
	}
	image := res.Candidates[0].Image
	for _, c := range res.Candidates[1:] {
		if c.Image.String() != image.String() {
			return nil, false
		}
	}
	if _, digested := image.(reference.Digested); digested {
		return nil, false
	}
	tagged, ok := image.(reference.NamedTagged)
	return tagged, ok
}

func hasMirror(res *resolver.Resolution) bool {
	for _, c := range res.Candidates {
		if !c.Source {
			return true
		}
	}
	return false
}

func sourceCandidate(res *resolver.Resolution) (resolver.Candidate, bool) {
	for _, c := range res.Candidates {
		if c.Source {
			return c, true
		}
	}
	return resolver.Candidate{}, false
}

// sourceName names the source of res for errors.
func sourceName(res *resolver.Resolution) string {
	if c, ok := sourceCandidate(res); ok {
		return c.Ref.String()
	}
	return reference.Domain(res.Original)
}

// DescribeTagCheck explains, for the resolve command, what the tag check
// does to a pull of res; nil when no tag-check entry covers it.
func DescribeTagCheck(res *resolver.Resolution, policy *resolver.TagCheckPolicy) []string {
	name := res.Original
	if len(res.Candidates) > 0 {
		name = res.Candidates[0].Image
	}
	entry, matched := policy.For(name.Name())
	if !matched {
		return nil
	}
	head := fmt.Sprintf("tag check: %s (prefix %q)", entry.Mode, entry.Prefix)
	_, tagged := checkedImage(res)
	_, hasSource := sourceCandidate(res)
	switch {
	case entry.Mode == resolver.TagCheckOff:
		return []string{head + ": a mirror's answer for a tag is pulled as it is"}
	case !tagged:
		return []string{head + " does not apply: not a pull of one image by tag (a pull by digest is checked by the runtime)"}
	case !hasMirror(res):
		return []string{head + " does not apply: no mirror is a candidate"}
	case !hasSource && entry.Mode == resolver.TagCheckSourceRequired:
		return []string{head + ": the rule never contacts the source, so the tag cannot be checked and the pull fails"}
	case !hasSource:
		return []string{head + ": the rule never contacts the source, so the tag cannot be checked; the mirrors' answers are pulled and compared with the digest recorded for the tag before"}
	}
	lines := []string{
		fmt.Sprintf("%s: the source %s is asked for the tag's digest S (HEAD, with the caller's credentials) while each mirror is asked for its own answer", head, sourceName(res)),
		"a mirror answering S is pulled as mirror@S; one answering another digest only if its manifest for this node's platform is the source's, else it is skipped as stale",
	}
	if entry.Mode == resolver.TagCheckSourceRequired {
		return append(lines, "if the source cannot be asked, the pull fails")
	}
	return append(lines, "if the source cannot be asked, the mirrors' answers are pulled and compared with the digest recorded for the tag before")
}

// registryTags asks registries for a tag's digest through kept clients
// (tag_heads.go), and reads manifests through the containers/image docker
// transport; both honour `insecure`, certs.d and the auth file as the
// probe's requests do.
type registryTags struct {
	heads    *headClients
	authFile string
	agent    string
	// noRules is a registries.conf.d that holds no files, or does not
	// exist: with os.DevNull as the main file, no rules at all.
	noRules string
}

// Digest implements tagRegistry, through clients kept between checks
// (tag_heads.go). The resolution's registries configuration applies to
// ref's host (insecure, blocked).
func (r *registryTags) Digest(ctx context.Context, res *resolver.Resolution, c resolver.Candidate, ref reference.Named, auth *runtimeapi.AuthConfig) (digest.Digest, error) {
	return r.heads.Digest(ctx, res.SystemContext(), ref, c.Insecure, auth)
}

// Manifest implements tagRegistry. An image source of containers/image
// tries the rule's mirrors of ref before ref itself, and would hand them
// the source's credentials: it is opened with no registries configuration,
// so that it asks ref's host alone.
func (r *registryTags) Manifest(ctx context.Context, c resolver.Candidate, ref reference.Named, auth *runtimeapi.AuthConfig) ([]byte, error) {
	dref, err := docker.NewReference(ref)
	if err != nil {
		return nil, err
	}
	sys := &types.SystemContext{SystemRegistriesConfPath: os.DevNull, SystemRegistriesConfDirPath: r.noRules}
	r.setup(sys, c, auth)
	src, err := dref.NewImageSource(ctx, sys)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	b, mt, err := src.GetManifest(ctx, nil)
	if err != nil {
		return nil, err
	}
	if len(b) > maxIndexSize {
		return nil, fmt.Errorf("manifest %s (%s) larger than 4 MiB", ref, mt)
	}
	return b, nil
}

func (r *registryTags) setup(sys *types.SystemContext, c resolver.Candidate, auth *runtimeapi.AuthConfig) {
	sys.AuthFilePath = r.authFile
	sys.DockerRegistryUserAgent = r.agent
	if c.Insecure {
		sys.DockerInsecureSkipTLSVerify = types.OptionalBoolTrue
	}
	if da, token := dockerAuth(auth); da != nil {
		sys.DockerAuthConfig = da
	} else if token != "" {
		sys.DockerBearerRegistryToken = token
	}
}

// dockerAuth turns a CRI AuthConfig into containers/image credentials: a
// user and password (given apart, or as the base64 "user:password" of
// Auth), an identity token, or else a registry token.
func dockerAuth(a *runtimeapi.AuthConfig) (*types.DockerAuthConfig, string) {
	if a == nil {
		return nil, ""
	}
	user, pass := a.GetUsername(), a.GetPassword()
	if user == "" && pass == "" && a.GetAuth() != "" {
		if b, err := base64.StdEncoding.DecodeString(a.GetAuth()); err == nil {
			user, pass, _ = strings.Cut(string(b), ":")
		}
	}
	if user != "" || pass != "" || a.GetIdentityToken() != "" {
		return &types.DockerAuthConfig{Username: user, Password: pass, IdentityToken: a.GetIdentityToken()}, ""
	}
	return nil, a.GetRegistryToken()
}
