package proxy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	digest "github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	"go.podman.io/image/v5/docker/reference"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/metrics"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
)

// A digest substitution serves a pull by the digest D of a multi-arch index
// that no candidate has, typically because the mirror holds only the node's
// platform: it finds index bytes whose digest is D, picks the node's child C
// from them, and pulls repo@C through the same candidates. The runtime
// verifies C's content; the index, proven by its digest, proves that C
// belongs to D. Bytes whose digest is not D are never used.

// indexReader reads manifests from registries for the digest substitution.
type indexReader interface {
	// Manifest returns the manifest c.Ref names, as the registry serves it.
	Manifest(ctx context.Context, res *resolver.Resolution, c resolver.Candidate) ([]byte, error)
	// Companion returns the single layer of the artifact tagged tag in the
	// repository of c.Ref.
	Companion(ctx context.Context, res *resolver.Resolution, c resolver.Candidate, tag string) ([]byte, error)
}

// IndexFileName is the name of the file holding the index with digest d in
// an index directory, and without its suffix the companion artifact's tag:
// "sha256-<hex>".
func IndexFileName(d digest.Digest) string {
	return d.Algorithm().String() + "-" + d.Encoded()
}

// CompanionTag is the tag of the artifact on a mirror whose single layer
// holds the bytes of the index with digest d, beside the image in the same
// repository: the tag scheme of the referrers fallback, with an ".index"
// suffix.
func CompanionTag(d digest.Digest) string { return IndexFileName(d) + ".index" }

// errNoSubstitution: the pull is not one a substitution can serve (not by
// digest, or substitution off); the caller keeps its own error.
var errNoSubstitution = errors.New("no digest substitution")

// indexFound is a verified index and where it came from.
type indexFound struct {
	bytes []byte
	from  string // a metrics.IndexFrom* value
	where string // the place, for logs
}

// substitute serves a pull by digest that no candidate served, from the
// child the node needs. It returns what served the pull, or an error that
// says why it could not (which places were asked for the index, which
// platforms the index lists, how the child's pull went).
func (s *Server) substitute(ctx context.Context, req *runtimeapi.PullImageRequest, res *resolver.Resolution) (*runtimeapi.PullImageResponse, string, error) {
	dg, ok := res.Original.(reference.Digested)
	if !ok || s.indexes == nil {
		return nil, "", errNoSubstitution
	}
	d := dg.Digest()
	registry := ruleLabel(res.Rule)
	log := s.log.WithFields(logrus.Fields{"image": res.Original.String(), "digest": d.String(), "platform": s.platform.String()})
	count := func(from, result string) { s.metrics.DigestSubstitutions.WithLabelValues(registry, from, result).Inc() }

	idx, asked := s.findIndex(ctx, res, d)
	if idx == nil {
		count(metrics.IndexFromNone, metrics.SubstitutionNoIndex)
		err := fmt.Errorf("digest substitution: no index with digest %s found: %s", d, strings.Join(asked, "; "))
		log.WithError(err).Warn("digest substitution failed")
		return nil, "", err
	}
	log = log.WithFields(logrus.Fields{"index_from": idx.from, "index_source": idx.where})
	child, platform, err := chooseChild(idx.bytes, s.platform)
	if err != nil {
		result := metrics.SubstitutionNoPlatform
		if errors.Is(err, errNotIndex) {
			result = metrics.SubstitutionNotIndex
		}
		count(idx.from, result)
		err = fmt.Errorf("digest substitution: %s from %s: %w", d, idx.where, err)
		log.WithError(err).Warn("digest substitution failed")
		return nil, "", err
	}
	log = log.WithFields(logrus.Fields{"child": child.String(), "child_platform": platform})

	childRes, err := s.resolver.Resolve(res.Original.Name() + "@" + child.String())
	if err != nil {
		count(idx.from, metrics.SubstitutionFailed)
		return nil, "", fmt.Errorf("digest substitution: resolve child %s: %w", child, err)
	}
	o := s.tryCandidates(ctx, req, childRes)
	if o.resp == nil {
		count(idx.from, metrics.SubstitutionFailed)
		err := o.stop
		if err == nil {
			err = fmt.Errorf("digest substitution: index %s from %s names %s for %s, which no candidate served: %s",
				d, idx.where, child, platform, strings.Join(o.tried, "; "))
		}
		log.WithError(err).Warn("digest substitution failed")
		return nil, "", err
	}
	if err := s.remember(ctx, res.Original, o.served, o.resp); err != nil {
		count(idx.from, metrics.SubstitutionFailed)
		return nil, "", fmt.Errorf("digest substitution: pulled %s but cannot record the name %s: %w", o.served.Ref, res.Original, err)
	}
	count(idx.from, metrics.SubstitutionSuccess)
	log.WithFields(logrus.Fields{"served_by": o.served.Ref.String(), "image_id": o.resp.GetImageRef()}).
		Info("digest substitution: pulled the platform's manifest of the index")
	return o.resp, o.served.Ref.String(), nil
}

// findIndex looks for bytes whose digest is d: each candidate's manifest
// endpoint (the mirrors in order, then the source where the rule allows it),
// the index directory, then the companion artifact on each mirror. asked
// says what each place answered, for the error when none had it.
func (s *Server) findIndex(ctx context.Context, res *resolver.Resolution, d digest.Digest) (*indexFound, []string) {
	var asked []string
	try := func(from, where string, b []byte, err error) *indexFound {
		switch {
		case err != nil:
			asked = append(asked, fmt.Sprintf("%s: %v", where, err))
		case !provesDigest(b, d):
			asked = append(asked, fmt.Sprintf("%s: refused %d bytes whose digest is not %s", where, len(b), d))
			s.log.WithFields(logrus.Fields{"digest": d.String(), "index_source": where}).Warn("digest substitution: refused index bytes that do not match the digest")
		default:
			return &indexFound{bytes: b, from: from, where: where}
		}
		return nil
	}
	// A mirror held back after failures would cost a timeout here too.
	held := func(c resolver.Candidate) bool { return !c.Source && s.gate.breaker.held(c.Location) }
	for _, c := range res.Candidates {
		from, where := metrics.IndexFromMirror, "mirror "+c.Ref.String()
		if c.Source {
			from, where = metrics.IndexFromSource, "source "+c.Ref.String()
		}
		if held(c) {
			asked = append(asked, where+": not asked, held back after failures")
			continue
		}
		b, err := s.indexes.Manifest(ctx, res, c)
		if f := try(from, where, b, err); f != nil {
			return f, nil
		}
	}
	if res.NeverContactSource {
		asked = append(asked, "source not asked (never contact the source)")
	}
	if s.indexDir != "" {
		path := filepath.Join(s.indexDir, IndexFileName(d))
		b, err := readIndexFile(path)
		if f := try(metrics.IndexFromDir, "index file "+path, b, err); f != nil {
			return f, nil
		}
	}
	for _, c := range res.Candidates {
		if c.Source || held(c) {
			continue
		}
		tag := CompanionTag(d)
		b, err := s.indexes.Companion(ctx, res, c, tag)
		if f := try(metrics.IndexFromCompanion, "companion "+reference.TrimNamed(c.Ref).String()+":"+tag, b, err); f != nil {
			return f, nil
		}
	}
	if ctx.Err() != nil {
		asked = append(asked, "stopped: "+ctx.Err().Error())
	}
	return nil, asked
}

// provesDigest: b hashes to d, with d's own algorithm, over the exact bytes.
func provesDigest(b []byte, d digest.Digest) bool {
	if d.Validate() != nil || len(b) == 0 {
		return false
	}
	return d.Algorithm().FromBytes(b) == d
}

// readIndexFile reads a file of the index directory, bounded.
func readIndexFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errors.New("no such file")
		}
		return nil, err
	}
	defer f.Close()
	return readBounded(f)
}

// DescribeSubstitution explains, for the resolve command, what a pull of
// res does when it is by digest and no candidate has that digest; nil for a
// pull by tag.
func DescribeSubstitution(res *resolver.Resolution, indexDir string, p Platform) []string {
	dg, ok := res.Original.(reference.Digested)
	if !ok {
		return nil
	}
	d := dg.Digest()
	var places, companions []string
	for _, c := range res.Candidates {
		if c.Source {
			places = append(places, "source "+c.Ref.String())
			continue
		}
		places = append(places, "mirror "+c.Ref.String())
		companions = append(companions, "companion "+reference.TrimNamed(c.Ref).String()+":"+CompanionTag(d))
	}
	if res.NeverContactSource {
		places = append(places, "(not the source: never contact the source)")
	}
	if indexDir != "" {
		places = append(places, "index file "+filepath.Join(indexDir, IndexFileName(d)))
	}
	places = append(places, companions...)
	return []string{
		fmt.Sprintf("if no candidate has %s, the digest substitution looks for index bytes with that digest at: %s", d, strings.Join(places, ", ")),
		fmt.Sprintf("and pulls the index's manifest for platform %s as %s@<its digest> through the same candidates", p, res.Original.Name()),
	}
}
