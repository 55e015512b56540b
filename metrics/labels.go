package metrics

// Label values with a fixed meaning, declared here and nowhere else, so that
// a typo cannot mint a new series and every value a collector can take is
// listed beside it.
const (
	// MirrorSource is the mirror label of an attempt against the source
	// registry itself rather than a mirror.
	MirrorSource = "source"
	// RegistryNone is the registry label of a reference no registries.conf
	// rule matched.
	RegistryNone = "none"

	// ResultSuccess: the attempt or pull produced an image.
	ResultSuccess = "success"
	// ResultError: the attempt or pull failed. For attempts: the candidate
	// answered with an error other than "not found" (see Reason*).
	ResultError = "error"
	// ResultCanceled: the caller (kubelet) gave up before the attempt or
	// pull finished. Kept apart from error because it says nothing about the
	// mirror's health.
	ResultCanceled = "canceled"
	// ResultBlocked: the pull was refused by a registries.conf "blocked" rule
	// (pulls only).
	ResultBlocked = "blocked"
	// ResultInvalid: the request carried no usable reference (pulls only).
	ResultInvalid = "invalid"

	// ResultTimeout: an attempt abandoned after the attempt timeout; the
	// candidate stalled, unlike a caller's cancel (attempts only).
	ResultTimeout = "timeout"
	// ResultSkipped: a mirror held back by its breaker; no request was made
	// (attempts only).
	ResultSkipped = "skipped"
	// ResultMissing: the candidate answered that it does not have the image
	// (a cache miss), whether the manifest probe or the runtime found out. It
	// is not a failure (attempts only).
	ResultMissing = "missing"
	// ResultUnreachable: the manifest probe could not connect to the mirror
	// (attempts only).
	ResultUnreachable = "unreachable"

	// ReloadSuccess and ReloadFailure are the ConfigReloads results.
	ReloadSuccess = "success"
	ReloadFailure = "failure"

	// RebuildRestored and RebuildAmbiguous are the AliasesRebuilt results.
	RebuildRestored  = "restored"
	RebuildAmbiguous = "ambiguous"
)

// PullResults are the result values of cri_mirror_pulls_total.
var PullResults = []string{ResultSuccess, ResultError, ResultCanceled, ResultBlocked, ResultInvalid}

// AttemptResults are the result values of cri_mirror_pull_attempts_total and
// cri_mirror_pull_attempt_duration_seconds.
var AttemptResults = []string{ResultSuccess, ResultError, ResultCanceled, ResultTimeout, ResultSkipped, ResultMissing, ResultUnreachable}

// FailedAttemptResults are the attempt results that count as a failure of
// the candidate, each with a reason in cri_mirror_pull_attempt_failures_total.
var FailedAttemptResults = []string{ResultError, ResultTimeout, ResultUnreachable}

// Reasons of cri_mirror_pull_attempt_failures_total: why a failed attempt
// (FailedAttemptResults) failed, read from the runtime's error (runtimes
// report registry errors as text). A cache miss is not a failure: it is the
// attempt result ResultMissing.
const (
	ReasonUnauthorized = "unauthorized" // credentials missing or refused
	ReasonConnection   = "connection"   // refused, reset, closed mid-transfer, no route
	ReasonTimeout      = "timeout"      // no answer in time
	ReasonServerError  = "server_error" // 5xx from the registry
	ReasonBadContent   = "bad_content"  // content that does not match its digest
	ReasonOther        = "other"
)

// FailureReasons are the reason values of cri_mirror_pull_attempt_failures_total.
var FailureReasons = []string{ReasonUnauthorized, ReasonConnection, ReasonTimeout, ReasonServerError, ReasonBadContent, ReasonOther}

// Probe modes and results of cri_mirror_probes_total.
const (
	// ProbeBefore: the probe ran before the runtime was asked to pull.
	ProbeBefore = "before"
	// ProbeAlongside: the probe ran while the runtime pulled from a mirror
	// that had a recent hit.
	ProbeAlongside = "alongside"

	ProbePresent      = "present"      // the mirror has the manifest
	ProbeMissing      = "missing"      // the mirror answered without it
	ProbeUnreachable  = "unreachable"  // no connection could be made in time
	ProbeSlow         = "slow"         // connected, but no answer in time: the runtime decides
	ProbeInconclusive = "inconclusive" // credentials, TLS or scheme trouble: the runtime decides
)

// ProbeModes and ProbeResults list the label values of cri_mirror_probes_total.
var (
	ProbeModes   = []string{ProbeBefore, ProbeAlongside}
	ProbeResults = []string{ProbePresent, ProbeMissing, ProbeUnreachable, ProbeSlow, ProbeInconclusive}
)

// Where the digest substitution found the index bytes
// (cri_mirror_digest_substitutions_total index_from).
const (
	IndexFromMirror    = "mirror"    // a mirror's manifest endpoint for the digest
	IndexFromSource    = "source"    // the source registry
	IndexFromDir       = "index_dir" // the operator's index directory
	IndexFromCompanion = "companion" // the companion artifact on a mirror
	IndexFromNone      = "none"      // nowhere
)

// Results of cri_mirror_digest_substitutions_total.
const (
	SubstitutionSuccess    = "success"     // the platform's manifest was pulled
	SubstitutionNoIndex    = "no_index"    // no bytes with the digest were found
	SubstitutionNotIndex   = "not_index"   // the digest names one image's manifest, not an index
	SubstitutionNoPlatform = "no_platform" // the index has no manifest for the platform
	SubstitutionFailed     = "failed"      // no candidate served the platform's manifest
)

// IndexFromValues and SubstitutionResults list the label values of
// cri_mirror_digest_substitutions_total. SubstitutionNoIndex goes with
// IndexFromNone only, every other result with every other source.
var (
	IndexFromValues     = []string{IndexFromMirror, IndexFromSource, IndexFromDir, IndexFromCompanion, IndexFromNone}
	SubstitutionResults = []string{SubstitutionSuccess, SubstitutionNoIndex, SubstitutionNotIndex, SubstitutionNoPlatform, SubstitutionFailed}
)

// Results of cri_mirror_tag_checks_total: how a mirror's answer for a tag
// compared with the source's, or that the source could not be asked.
const (
	TagCheckMatch             = "match"              // the mirror answered the source's digest
	TagCheckPlatformMatch     = "platform_match"     // another digest, the same image for the node's platform
	TagCheckStale             = "stale"              // another image: the mirror was not pulled
	TagCheckSourceUnreachable = "source_unreachable" // the source could not be asked (once per pull)
)

// TagCheckResults list the result values of cri_mirror_tag_checks_total.
var TagCheckResults = []string{TagCheckMatch, TagCheckPlatformMatch, TagCheckStale, TagCheckSourceUnreachable}
