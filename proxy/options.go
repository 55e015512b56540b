package proxy

import (
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/metrics"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
)

// Option configures optional parts of a Server.
type Option func(*Server)

// WithMetrics sets the collectors the server reports to. Without it the
// server still counts, into collectors nobody registered.
func WithMetrics(m *metrics.Metrics) Option { return func(s *Server) { s.metrics = m } }

// WithCredentials sets how credentials for mirror hosts are found. Without it
// mirrors are pulled anonymously.
func WithCredentials(c Credentials) Option { return func(s *Server) { s.creds = c } }

// WithCooldown sets how long a failed mirror is held back (0 turns the
// circuit breaker off). Default DefaultCooldown.
func WithCooldown(d time.Duration) Option { return func(s *Server) { s.cooldown = d } }

// WithLogger sets the logger.
func WithLogger(l logrus.FieldLogger) Option { return func(s *Server) { s.log = l } }

// WithAttemptTimeout bounds each mirror attempt that has another candidate
// after it, so a stalled mirror costs d, not the caller's whole deadline.
// The last candidate always gets the caller's full deadline. 0 = no bound.
func WithAttemptTimeout(d time.Duration) Option { return func(s *Server) { s.attemptTimeout = d } }

// withProber enables the manifest probe for mirror candidates.
func withProber(p prober) Option { return func(s *Server) { s.prober = p } }

// WithProbeOverlap sets how long after a mirror's last hit (it served a
// pull, or its probe found the manifest), with no miss or failure since, its
// probe runs alongside the runtime pull instead of before it. 0: always
// before. Default DefaultProbeOverlap.
func WithProbeOverlap(d time.Duration) Option { return func(s *Server) { s.probeOverlap = d } }

// WithStallTimeout sets the stall window of pulls from a mirror with another
// candidate after it (0: no stall detection; see stallMinRate).
func WithStallTimeout(d time.Duration) Option { return func(s *Server) { s.stallTimeout = d } }

// WithManifestProbe checks a mirror for the manifest (a HEAD through the
// containers/image docker transport) before, or while, the runtime pulls from
// it, bounded by timeout. authFile holds the mirrors' credentials (empty: the
// containers/image default); userAgent names the proxy to the mirror.
func WithManifestProbe(timeout time.Duration, authFile, userAgent string) Option {
	return withProber(newManifestProbe(timeout, authFile, userAgent))
}

// WithDigestSubstitution turns the digest substitution on: index bytes are
// read from registries through the containers/image docker transport, each
// request bounded by timeout, with the credentials of authFile (empty: the
// containers/image default) for the host asked.
func WithDigestSubstitution(timeout time.Duration, authFile, userAgent string) Option {
	return withIndexReader(newRegistryIndexes(timeout, authFile, userAgent))
}

// withIndexReader turns the digest substitution on, reading index bytes
// from registries with r.
func withIndexReader(r indexReader) Option { return func(s *Server) { s.indexes = r } }

// WithIndexDir adds a directory of index bytes, saved by the operator, to the
// places the digest substitution looks (see IndexFileName).
func WithIndexDir(dir string) Option { return func(s *Server) { s.indexDir = dir } }

// WithPlatform sets the platform the digest substitution picks from an
// index. Default: the node's, as the runtime picks it.
func WithPlatform(p Platform) Option { return func(s *Server) { s.platform = p } }

// WithTagCheck turns the tag check on for the prefixes policy sets to a mode
// other than off (see tag_check.go): the source and the mirrors are asked
// for a tag's digest through the containers/image docker transport, bounded
// by timeout, the mirrors with the credentials of authFile (empty: the
// containers/image default). A manifest is read with no registries rules, so
// that no mirror is asked in the host's place: noRulesDir is a drop-in
// directory with no files (or none at all). records keeps the digest seen
// per tag (nil: none kept).
func WithTagCheck(policy *resolver.TagCheckPolicy, timeout time.Duration, authFile, userAgent, noRulesDir string, records TagRecords) Option {
	return withTagCheck(policy, timeout, &registryTags{heads: newHeadClients(authFile, userAgent), authFile: authFile, agent: userAgent, noRules: noRulesDir}, records)
}

func withTagCheck(policy *resolver.TagCheckPolicy, timeout time.Duration, r tagRegistry, records TagRecords) Option {
	return func(s *Server) {
		if len(policy.Entries()) == 0 {
			s.tagCheck = nil
			return
		}
		s.tagCheck = &tagChecker{policy: policy, timeout: timeout, registry: r, records: records}
	}
}
