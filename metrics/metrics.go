package metrics

import (
	"fmt"
	"slices"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
)

// Metric family names. Names returns them all.
const (
	namePullAttemptDuration = "cri_mirror_pull_attempt_duration_seconds"
	namePullAttempts        = "cri_mirror_pull_attempts_total"
	nameAttemptFailures     = "cri_mirror_pull_attempt_failures_total"
	namePullFallbacks       = "cri_mirror_pull_fallbacks_total"
	nameSourcePulls         = "cri_mirror_source_pulls_total"
	namePulls               = "cri_mirror_pulls_total"
	nameMirrorHealthy       = "cri_mirror_mirror_healthy"
	nameAliases             = "cri_mirror_aliases"
	nameConfigReloads       = "cri_mirror_config_reloads_total"
	nameRuntimeUp           = "cri_mirror_runtime_up"
	nameProbes              = "cri_mirror_probes_total"
	nameStoreRecoveries     = "cri_mirror_alias_store_recoveries_total"
	nameStorePersistent     = "cri_mirror_alias_store_persistent"
	nameAliasesRebuilt      = "cri_mirror_aliases_rebuilt_total"
	nameDigestSubstitutions = "cri_mirror_digest_substitutions_total"
	nameTagChecks           = "cri_mirror_tag_checks_total"
	nameTagChanges          = "cri_mirror_tag_changes_total"
	nameTagCheckDuration    = "cri_mirror_tag_check_duration_seconds"
)

// grpcNames are the families grpcprom.ServerMetrics exports with the
// handling-time histogram enabled.
var grpcNames = []string{
	"grpc_server_started_total",
	"grpc_server_handled_total",
	"grpc_server_msg_received_total",
	"grpc_server_msg_sent_total",
	"grpc_server_handling_seconds",
}

// pullBuckets span a cached small image (tens of milliseconds) to a
// multi-gigabyte image over a slow link (minutes).
var pullBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 180, 300}

// tagCheckBuckets span a registry on the node's network (a millisecond)
// to the default --tag-check-timeout and past it.
var tagCheckBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// grpcBuckets cover both ends of the CRI image API: ImageStatus answers in
// milliseconds, PullImage can take minutes. prometheus.DefBuckets stops at 10s.
var grpcBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// Metrics holds every collector of the proxy.
type Metrics struct {
	// AttemptDuration: one observation per pull attempt against one
	// candidate that took time (every result in AttemptResults but
	// skipped). Labels registry, mirror, result.
	AttemptDuration *prometheus.HistogramVec
	// Attempts counts every attempt, skipped ones included. Labels registry,
	// mirror, result (AttemptResults).
	Attempts *prometheus.CounterVec
	// AttemptFailures counts the failed attempts (FailedAttemptResults) by
	// why they failed. Labels registry, mirror, reason (FailureReasons).
	AttemptFailures *prometheus.CounterVec
	// Fallbacks counts moves from one candidate to the next. Label registry.
	Fallbacks *prometheus.CounterVec
	// SourcePulls counts pulls served by the source after every mirror
	// failed or was skipped. Label registry.
	SourcePulls *prometheus.CounterVec
	// Pulls counts PullImage calls, once per call with that call's own
	// result: callers that share one runtime pull each count, and a caller
	// that gave up counts as canceled. Labels registry, result (PullResults).
	Pulls *prometheus.CounterVec
	// Probes counts manifest probes of mirrors that gave a verdict. Labels
	// mirror, mode (ProbeModes), result (ProbeResults).
	Probes *prometheus.CounterVec
	// DigestSubstitutions counts pulls by an index digest that no candidate
	// had, served (or not) from the platform's child of the index. Labels
	// registry, index_from (IndexFromValues), result (SubstitutionResults).
	DigestSubstitutions *prometheus.CounterVec
	// TagChecks counts the tag check's verdicts: one per mirror answer
	// compared with the source's (match, platform_match, stale), one per
	// pull whose source could not be asked (source_unreachable). Labels
	// registry, result (TagCheckResults).
	TagChecks *prometheus.CounterVec
	// TagChanges counts pulls whose tag was served, unchecked, with another
	// digest than the one recorded for it before. Label registry.
	TagChanges *prometheus.CounterVec
	// TagCheckDuration: one observation per checked pull, the time it
	// waited for the tag check before the runtime was asked. Label registry.
	TagCheckDuration *prometheus.HistogramVec
	// MirrorHealthy is 1 while a mirror is usable, 0 during its cool-down
	// after failures. Label mirror.
	MirrorHealthy *prometheus.GaugeVec
	// Aliases is the number of entries in the alias table.
	Aliases prometheus.Gauge
	// StoreRecoveries counts damaged alias databases moved aside at start.
	StoreRecoveries prometheus.Counter
	// StorePersistent is 1 while alias changes are written to disk, 0 while
	// they are kept in memory only (the state directory cannot be written).
	StorePersistent prometheus.Gauge
	// AliasesRebuilt counts runtime images considered when the alias table
	// is rebuilt from the runtime. Label result (restored: an alias was
	// recorded; ambiguous: more than one original name fits, none recorded).
	AliasesRebuilt *prometheus.CounterVec
	// ConfigReloads counts registries.conf reloads. Label result (success|failure).
	ConfigReloads *prometheus.CounterVec
	// RuntimeUp is 1 while the runtime's image service answers, else 0.
	RuntimeUp prometheus.Gauge
	// GRPC provides the interceptors behind grpc_server_* per CRI method:
	// chain GRPC.UnaryServerInterceptor() and GRPC.StreamServerInterceptor()
	// into the server, then GRPC.InitializeMetrics(srv) once services are
	// registered so every method reports zeros before its first call.
	GRPC *grpcprom.ServerMetrics

	// rulesMu orders SetRules with SetMirrorHealthy, so that a breaker
	// change is not overwritten by a reload's initial value.
	rulesMu sync.Mutex
}

// New creates the collectors. Nothing is registered yet.
func New() *Metrics {
	m := &Metrics{
		AttemptDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    namePullAttemptDuration,
			Help:    "Duration of one pull attempt against one candidate (a mirror or the source), by result: success, error, canceled, timeout, missing or unreachable.",
			Buckets: pullBuckets,
		}, []string{"registry", "mirror", "result"}),
		Attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: namePullAttempts,
			Help: "Pull attempts against one candidate (a mirror or the source), by result: success, error, canceled, timeout (the attempt timeout passed), skipped (held back by the breaker, no request made), missing (the candidate does not have the image: not a failure) or unreachable (the probe could not connect).",
		}, []string{"registry", "mirror", "result"}),
		AttemptFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: nameAttemptFailures,
			Help: "Failed pull attempts (results error, timeout and unreachable) against one candidate, by reason: unauthorized, connection, timeout, server_error, bad_content or other. Cache misses are not failures.",
		}, []string{"registry", "mirror", "reason"}),
		Fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: namePullFallbacks,
			Help: "Times a pull moved on from one candidate to the next.",
		}, []string{"registry"}),
		SourcePulls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: nameSourcePulls,
			Help: "Pulls served by the source registry after every mirror failed or was skipped.",
		}, []string{"registry"}),
		Pulls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: namePulls,
			Help: "PullImage calls, counted once per call with that call's result: success, error, canceled (the caller gave up), blocked or invalid. Calls that share one runtime pull each count.",
		}, []string{"registry", "result"}),
		Probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: nameProbes,
			Help: "Manifest probes of mirrors that gave a verdict, by mode (before or alongside the runtime pull) and result: present, missing, unreachable (no connection), slow (connected, no answer in time) or inconclusive.",
		}, []string{"mirror", "mode", "result"}),
		DigestSubstitutions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: nameDigestSubstitutions,
			Help: "Pulls by the digest of a multi-arch index that no candidate had, by where the index bytes (checked against the digest) came from: mirror, source, index_dir, companion or none; and by result: success (the platform's manifest was pulled), no_index, not_index (the digest names a single image), no_platform (the index has no manifest for the platform) or failed (no candidate served the platform's manifest).",
		}, []string{"registry", "index_from", "result"}),
		TagChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: nameTagChecks,
			Help: "Tag check verdicts under a tag-check policy: per mirror answer compared with the source's digest, match, platform_match (another digest, the same image for the node's platform) or stale (not pulled); per pull, source_unreachable (the source could not be asked).",
		}, []string{"registry", "result"}),
		TagChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: nameTagChanges,
			Help: "Pulls of a tag the source could not confirm that a mirror served with another digest than the one recorded for the tag before (trust on first use).",
		}, []string{"registry"}),
		TagCheckDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    nameTagCheckDuration,
			Help:    "Time a pull under a tag-check policy waited for the check (the source's HEAD and the mirrors' up to the one pulled, and the manifests read when a mirror disagreed) before the runtime was asked.",
			Buckets: tagCheckBuckets,
		}, []string{"registry"}),
		MirrorHealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: nameMirrorHealthy,
			Help: "1 while a mirror is tried in order, 0 while it is demoted or skipped after recent failures.",
		}, []string{"mirror"}),
		Aliases: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: nameAliases,
			Help: "Entries in the alias table (original reference to mirrored image).",
		}),
		StoreRecoveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: nameStoreRecoveries,
			Help: "Damaged alias databases moved aside at start (the table then starts empty and is rebuilt from the runtime).",
		}),
		StorePersistent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: nameStorePersistent,
			Help: "1 while alias changes are written to disk, 0 while they are kept in memory only because the state directory cannot be written.",
		}),
		AliasesRebuilt: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: nameAliasesRebuilt,
			Help: "Runtime images under a mirror name matched back to an original name when the alias table is rebuilt, by result: restored or ambiguous.",
		}, []string{"result"}),
		ConfigReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: nameConfigReloads,
			Help: "Reloads of the mirror configuration, by result: success or failure.",
		}, []string{"result"}),
		RuntimeUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: nameRuntimeUp,
			Help: "1 if the container runtime's image service answered the last check, else 0.",
		}),
		GRPC: grpcprom.NewServerMetrics(
			grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(grpcBuckets)),
		),
	}
	// Both results exist from the start so that an alert on
	// increase(...{result="failure"}[1h]) sees a zero, not an absent series.
	m.ConfigReloads.WithLabelValues(ReloadSuccess)
	m.ConfigReloads.WithLabelValues(ReloadFailure)
	m.AliasesRebuilt.WithLabelValues(RebuildRestored)
	m.AliasesRebuilt.WithLabelValues(RebuildAmbiguous)
	m.StorePersistent.Set(1)
	return m
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.AttemptDuration, m.Attempts, m.AttemptFailures, m.Fallbacks, m.SourcePulls, m.Pulls,
		m.Probes, m.DigestSubstitutions, m.TagChecks, m.TagChanges, m.TagCheckDuration, m.MirrorHealthy, m.Aliases, m.StoreRecoveries, m.StorePersistent, m.AliasesRebuilt,
		m.ConfigReloads, m.RuntimeUp, m.GRPC,
	}
}

// Register registers every collector with reg. It is all or nothing: if one
// registration fails, those already made by this call are undone, so a
// caller may retry on another registry.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	var done []prometheus.Collector
	for _, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			return fmt.Errorf("register metrics: %w", err)
		}
		done = append(done, c)
	}
	return nil
}

// ObserveAttempt records one pull attempt in both AttemptDuration and Attempts.
func (m *Metrics) ObserveAttempt(registry, mirror, result string, d time.Duration) {
	m.AttemptDuration.WithLabelValues(registry, mirror, result).Observe(d.Seconds())
	m.Attempts.WithLabelValues(registry, mirror, result).Inc()
}

// SetMirrorHealthy sets cri_mirror_mirror_healthy of mirror.
func (m *Metrics) SetMirrorHealthy(mirror string, healthy bool) {
	m.rulesMu.Lock()
	defer m.rulesMu.Unlock()
	v := 0.0
	if healthy {
		v = 1
	}
	m.MirrorHealthy.WithLabelValues(mirror).Set(v)
}

// Names returns every metric family name this package exports, sorted.
// The go_* and process_* families added by NewRegistry are not included:
// they come from client_golang and vary with the Go version and platform.
func Names() []string {
	names := []string{
		namePullAttemptDuration, namePullAttempts, nameAttemptFailures, namePullFallbacks,
		nameSourcePulls, namePulls, nameMirrorHealthy, nameAliases,
		nameConfigReloads, nameRuntimeUp, nameProbes, nameStoreRecoveries, nameStorePersistent,
		nameAliasesRebuilt, nameDigestSubstitutions, nameTagChecks, nameTagChanges, nameTagCheckDuration,
	}
	names = append(names, grpcNames...)
	slices.Sort(names)
	return names
}
