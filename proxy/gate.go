package proxy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/metrics"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
)

// mirrorGate decides how a mirror candidate is tried, and learns from how
// each try went. It holds the three things the decision rests on:
//
//   - the breaker: a mirror that failed is skipped for a cool-down;
//   - the manifest probe (optional): a HEAD for the manifest, which finds a
//     missing tag or a dead mirror without handing the runtime a pull that
//     cannot succeed;
//   - recency: a mirror whose last answer was a hit within the probe overlap
//     is pulled from at once, and probed alongside the pull only if the pull
//     runs longer than the probe delay; any other mirror is probed first.
//
// Every try ends in record, the one place that updates the breaker and
// recency from the outcome.
type mirrorGate struct {
	breaker *breaker
	recent  *recency
	prober  prober        // nil: no probe
	overlap time.Duration // see WithProbeOverlap
	delay   time.Duration // see probeDelay
	// patience is how long a mirror found slow may take to answer a
	// manifest request while the runtime pulls from it (the stall window;
	// 0: no limit). See awaitAnswer.
	patience time.Duration
	metrics  *metrics.Metrics

	mu       sync.Mutex
	inFlight map[string]int // probes running per mirror, at most maxProbesPerMirror
}

// maxProbesPerMirror bounds the probes in flight against one mirror. A burst
// of distinct pulls must not queue hundreds of HEADs on a mirror, nor starve
// them on the node's CPU until they time out and hold a healthy mirror back:
// beyond the bound, pulls go to the runtime unprobed.
const maxProbesPerMirror = 8

// pullFunc asks the runtime to pull the candidate under ctx.
type pullFunc func(ctx context.Context) attempt

// try runs one mirror candidate through the gate and records its outcome.
// The last candidate is neither held back nor probed: trying it is better
// than failing for sure.
func (g *mirrorGate) try(ctx context.Context, res *resolver.Resolution, c resolver.Candidate, last bool, pull pullFunc) attempt {
	var a attempt
	switch {
	case last:
		a = pull(ctx)
	case !g.breaker.allow(c.Location):
		return attempt{result: metrics.ResultSkipped, why: "skipped: failed recently, cooling down"}
	case g.prober == nil:
		a = pull(ctx)
	case g.recent.within(c.Location, g.overlap):
		a = g.alongside(ctx, res, c, pull)
	default:
		a = g.before(ctx, res, c, pull)
	}
	g.record(c.Location, a)
	return a
}

// record updates the breaker and recency of mirror from one try's outcome.
func (g *mirrorGate) record(mirror string, a attempt) {
	switch {
	case a.result == metrics.ResultSuccess:
		g.breaker.success(mirror)
		g.recent.heard(mirror)
	case a.result == metrics.ResultSkipped:
		// No request was made; allow took no trial.
	case a.result == metrics.ResultCanceled || a.runtimeDown:
		// The caller went away, or the proxy lost the runtime: nothing
		// learnt about the mirror.
		g.breaker.release(mirror)
	case a.mirrorFault():
		g.breaker.failure(mirror)
		g.recent.forget(mirror)
	default:
		// It answered "no" (a miss, credentials refused): up, but its
		// probe goes first next time.
		g.breaker.release(mirror)
		g.recent.forget(mirror)
	}
}

// before probes c and asks the runtime to pull it unless the probe found the
// manifest missing or the mirror unreachable.
func (g *mirrorGate) before(ctx context.Context, res *resolver.Resolution, c resolver.Candidate, pull pullFunc) attempt {
	v := g.probe(ctx, res, c, metrics.ProbeBefore)
	if ctx.Err() != nil {
		return attempt{result: metrics.ResultCanceled, took: v.took, why: "canceled", probeMode: metrics.ProbeBefore}
	}
	if a, skip := v.skip(); skip {
		return a
	}
	if v.found == probePresent {
		// Heard from, even if the runtime's pull then fails for its own
		// reasons: the outcome of that pull overrides this in record.
		g.recent.heard(c.Location)
	}
	if v.found != probeSlow {
		a := pull(ctx)
		a.probeMode = metrics.ProbeBefore
		return a
	}
	a := g.pullAwaitingAnswer(ctx, res, c, pull)
	a.probeMode, a.probe = metrics.ProbeBefore, v.found.String()
	return a
}

// pullAwaitingAnswer asks the runtime to pull from a mirror the probe found
// slow (connected, no answer in time) while awaitAnswer waits for that
// answer, and turns a pull it stopped into a timeout of the mirror.
func (g *mirrorGate) pullAwaitingAnswer(ctx context.Context, res *resolver.Resolution, c resolver.Candidate, pull pullFunc) attempt {
	pullCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	waited := make(chan struct{})
	go func() {
		defer close(waited)
		g.awaitAnswer(pullCtx, res, c, stop)
	}()
	a := pull(pullCtx)
	stop(nil)
	<-waited
	if cause := context.Cause(pullCtx); a.err != nil && ctx.Err() == nil && errors.Is(cause, errStalled) {
		a = stalledAttempt(a, cause)
	}
	return a
}

// awaitAnswer asks a mirror the probe found slow for the manifest again,
// waiting up to the stall window, and stops the runtime's pull (stop with
// errStalled) when no answer comes in that time. A pull-through cache
// fetching a cold repository answers within seconds; a mirror that accepts
// connections and never answers would otherwise hold the pull until the
// caller's deadline wherever the runtime reports no download progress
// (CRI-O; see watchProgress), and kubelet sets no deadline on pulls. Any
// answer, or the pull ending first, leaves the pull alone. The request is
// the slow verdict's continuation, already counted, so it is not counted as
// a probe of its own.
func (g *mirrorGate) awaitAnswer(ctx context.Context, res *resolver.Resolution, c resolver.Candidate, stop context.CancelCauseFunc) {
	pp, ok := g.prober.(patientProber)
	if !ok || g.patience <= 0 || !g.takeProbeSlot(c.Location) {
		return
	}
	defer g.releaseProbeSlot(c.Location)
	found, _ := pp.probeWithin(ctx, res, c, g.patience)
	if ctx.Err() != nil {
		return
	}
	if found == probeSlow || found == probeUnreachable {
		stop(fmt.Errorf("%w: the mirror answered no manifest request in %s", errStalled, g.patience))
	}
}

// errProbeVeto stops a runtime pull the probe found pointless.
var errProbeVeto = errors.New("stopped: the manifest probe found the mirror missing the manifest or unreachable")

// alongside asks the runtime to pull c and, if the pull is still running
// after the probe delay, probes c alongside it: a verdict of missing or
// unreachable that comes before the pull's own result stops the pull and
// skips the mirror. Any other verdict leaves the mirror's health to the
// pull's own result.
func (g *mirrorGate) alongside(ctx context.Context, res *resolver.Resolution, c resolver.Candidate, pull pullFunc) attempt {
	pullCtx, veto := context.WithCancelCause(ctx)
	defer veto(nil)
	probeCtx, stopProbe := context.WithCancel(ctx)
	verdicts := make(chan probeVerdict, 1)
	go func() {
		wait := time.NewTimer(g.delay)
		defer wait.Stop()
		select {
		case <-probeCtx.Done(): // the pull ended first: no probe needed
			verdicts <- probeVerdict{}
			return
		case <-wait.C:
		}
		v := g.probe(probeCtx, res, c, metrics.ProbeAlongside)
		if _, skip := v.skip(); skip {
			veto(errProbeVeto)
		}
		verdicts <- v
		if v.found == probeSlow {
			g.awaitAnswer(probeCtx, res, c, veto)
		}
	}()
	a := pull(pullCtx)
	stopProbe()
	v := <-verdicts
	a.probeMode = metrics.ProbeAlongside
	if a.err != nil && ctx.Err() == nil {
		switch cause := context.Cause(pullCtx); {
		case errors.Is(cause, errProbeVeto):
			a, _ = v.skip()
			a.why += " (the runtime's pull was stopped)"
		case errors.Is(cause, errStalled):
			a = stalledAttempt(a, cause)
		}
	}
	return a
}

// stalledAttempt turns a pull stopped for want of an answer into a timeout
// of the mirror.
func stalledAttempt(a attempt, cause error) attempt {
	a.result, a.reason = metrics.ResultTimeout, metrics.ReasonTimeout
	a.err = status.Error(codes.DeadlineExceeded, cause.Error())
	a.why = cause.Error()
	return a
}

// probeVerdict is what one probe said, and how long it took to say it.
type probeVerdict struct {
	mode  string
	found probeResult
	err   error
	took  time.Duration
}

// probe asks the prober about c and counts the verdict. A probe stopped by
// its context says nothing: its verdict is inconclusive and not counted.
func (g *mirrorGate) probe(ctx context.Context, res *resolver.Resolution, c resolver.Candidate, mode string) probeVerdict {
	if !g.takeProbeSlot(c.Location) {
		return probeVerdict{mode: mode, found: probeInconclusive}
	}
	defer g.releaseProbeSlot(c.Location)
	start := time.Now()
	found, err := g.prober.Probe(ctx, res, c)
	if ctx.Err() != nil {
		return probeVerdict{mode: mode, found: probeInconclusive, err: ctx.Err(), took: time.Since(start)}
	}
	g.metrics.Probes.WithLabelValues(c.Location, mode, found.String()).Inc()
	return probeVerdict{mode: mode, found: found, err: err, took: time.Since(start)}
}

func (g *mirrorGate) takeProbeSlot(mirror string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.inFlight[mirror] >= maxProbesPerMirror {
		return false
	}
	if g.inFlight == nil {
		g.inFlight = map[string]int{}
	}
	g.inFlight[mirror]++
	return true
}

func (g *mirrorGate) releaseProbeSlot(mirror string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.inFlight[mirror]--; g.inFlight[mirror] <= 0 {
		delete(g.inFlight, mirror)
	}
}

// skip turns a verdict that keeps the runtime away from the mirror into the
// attempt it stands for.
func (v probeVerdict) skip() (attempt, bool) {
	a := attempt{took: v.took, probeMode: v.mode, probe: v.found.String()}
	switch v.found {
	case probeAbsent:
		a.result, a.why = metrics.ResultMissing, "skipped: the probe found no such manifest"
		return a, true
	case probeUnreachable:
		a.result, a.reason, a.why = metrics.ResultUnreachable, metrics.ReasonConnection, "skipped: the probe could not reach it"
		if v.err != nil {
			if failureReason(v.err) == metrics.ReasonTimeout {
				a.reason = metrics.ReasonTimeout
			}
			a.why += ": " + v.err.Error()
		}
		return a, true
	}
	return a, false
}

// healthChanged reports a mirror's breaker opening or closing.
func (g *mirrorGate) healthChanged(log logrus.FieldLogger) func(mirror string, healthy bool) {
	return func(mirror string, healthy bool) {
		log := log.WithField("mirror", mirror)
		if healthy {
			g.metrics.SetMirrorHealthy(mirror, true)
			log.Info("mirror is healthy again")
			return
		}
		g.metrics.SetMirrorHealthy(mirror, false)
		log.WithField("cooldown", g.breaker.cooldown).Warn("mirror failed: held back for the cool-down")
	}
}
