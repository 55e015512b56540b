package proxy

import (
	"context"
	"errors"
	"net"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/types"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/metrics"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
)

// probeResult is what a manifest probe learnt about a candidate.
type probeResult int

const (
	// probeInconclusive: the probe could not tell (credentials refused,
	// TLS or scheme trouble the runtime may not share); the runtime decides.
	probeInconclusive probeResult = iota
	// probePresent: the mirror has the manifest.
	probePresent
	// probeAbsent: the mirror answered and does not have it (a cache miss).
	probeAbsent
	// probeUnreachable: no connection could be made in time.
	probeUnreachable
	// probeSlow: a connection was made but no answer came in time. A
	// pull-through cache fetching a cold repository upstream looks like
	// this: not proof of a dead mirror, so the runtime decides, bounded by
	// the stall window (see mirrorGate.awaitAnswer and watchProgress).
	probeSlow
)

func (r probeResult) String() string {
	return [...]string{metrics.ProbeInconclusive, metrics.ProbePresent, metrics.ProbeMissing, metrics.ProbeUnreachable, metrics.ProbeSlow}[r]
}

// prober checks a mirror candidate before, or while, the runtime is asked to
// pull it. res is the resolution c came from.
type prober interface {
	Probe(ctx context.Context, res *resolver.Resolution, c resolver.Candidate) (probeResult, error)
}

// patientProber is a prober that can also wait longer than its probe
// timeout for an answer (see mirrorGate.awaitAnswer).
type patientProber interface {
	probeWithin(ctx context.Context, res *resolver.Resolution, c resolver.Candidate, timeout time.Duration) (probeResult, error)
}

// DefaultProbeOverlap is how long after a mirror's last hit its probe runs
// alongside the runtime pull instead of before it.
const DefaultProbeOverlap = 5 * time.Minute

// probeDelay is how long a runtime pull from a mirror whose last answer was
// a recent hit runs before its probe starts: a pull that ends sooner proved the mirror
// itself, and a probe then would only take CPU and registry time from it.
// A mirror that stops answering is still found within probeDelay plus the
// probe timeout.
const probeDelay = 250 * time.Millisecond

// manifestProbe asks a mirror for the manifest with a HEAD request through
// the containers/image docker transport, so it honours the rule's
// `insecure`, certs.d and the auth file for the mirror host: the same view
// of the mirror CRI-O would have.
type manifestProbe struct {
	timeout  time.Duration
	authFile string
	agent    string
}

// newManifestProbe returns a probe bounded by timeout. authFile is the
// proxy's own (empty: the containers/image default). The registries
// configuration is the one each resolution was made from.
func newManifestProbe(timeout time.Duration, authFile, userAgent string) *manifestProbe {
	return &manifestProbe{timeout: timeout, authFile: authFile, agent: userAgent}
}

// Probe implements prober.
func (p *manifestProbe) Probe(ctx context.Context, res *resolver.Resolution, c resolver.Candidate) (probeResult, error) {
	return p.probeWithin(ctx, res, c, p.timeout)
}

// probeWithin implements patientProber: a probe bounded by timeout instead
// of the probe timeout.
func (p *manifestProbe) probeWithin(ctx context.Context, res *resolver.Resolution, c resolver.Candidate, timeout time.Duration) (probeResult, error) {
	ref, err := docker.NewReference(c.Ref)
	if err != nil {
		return probeInconclusive, err
	}
	// containers/image reads registries.conf again for the host it
	// contacts (insecure, blocked): from the same files, through the cache
	// entry the resolver refreshed.
	sys := res.SystemContext()
	sys.AuthFilePath = p.authFile
	sys.DockerRegistryUserAgent = p.agent
	if c.Insecure {
		sys.DockerInsecureSkipTLSVerify = types.OptionalBoolTrue
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var connected atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		ConnectDone: func(_, _ string, err error) {
			if err == nil {
				connected.Store(true)
			}
		},
	})
	_, err = docker.GetDigest(ctx, sys, ref)
	found := classifyProbe(ctx, err)
	if found == probeUnreachable && connected.Load() {
		found = probeSlow
	}
	return found, err
}

// classifyProbe sorts a GetDigest error. containers/image reports a 404 on
// a HEAD (no body to decode) only in its message ("StatusCode: 404"); the
// probe tests pin this against a real registry.
func classifyProbe(ctx context.Context, err error) probeResult {
	var unauthorized docker.ErrUnauthorizedForCredentials
	var netErr net.Error
	switch {
	case err == nil:
		return probePresent
	case ctx.Err() != nil, errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.As(err, &netErr) && netErr.Timeout():
		return probeUnreachable
	case errors.As(err, &unauthorized):
		return probeInconclusive
	}
	msg := err.Error()
	if strings.Contains(msg, "StatusCode: 404") || strings.Contains(msg, "manifest unknown") || strings.Contains(msg, "name unknown") {
		return probeAbsent
	}
	return probeInconclusive
}
