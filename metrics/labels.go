package metrics

// Label values with a fixed meaning. Callers should use these rather than
// literals so that a typo cannot mint a new series.
const (
	// MirrorSource is the mirror label of an attempt against the source
	// registry itself rather than a mirror.
	MirrorSource = "source"
	// RegistryNone is the registry label of a reference no registries.conf
	// rule matched.
	RegistryNone = "none"

	// ResultSuccess: the attempt or pull produced an image.
	ResultSuccess = "success"
	// ResultError: the attempt or pull failed. For attempts this is what
	// mirror alerts watch.
	ResultError = "error"
	// ResultCanceled: the caller (kubelet) gave up before the attempt or
	// pull finished. Kept apart from error because it says nothing about the
	// mirror's health.
	ResultCanceled = "canceled"
	// ResultBlocked: the pull was refused by a registries.conf "blocked" rule
	// (Pulls only).
	ResultBlocked = "blocked"
	// ResultInvalid: the reference could not be parsed (Pulls only).
	ResultInvalid = "invalid"

	// ReloadSuccess and ReloadFailure are the ConfigReloads results.
	ReloadSuccess = "success"
	ReloadFailure = "failure"
)

// Reasons of cri_mirror_pull_attempt_failures_total: why an attempt failed,
// read from the runtime's error (runtimes report registry errors as text).
const (
	ReasonNotFound     = "not_found"    // the candidate does not have the image
	ReasonUnauthorized = "unauthorized" // credentials missing or refused
	ReasonConnection   = "connection"   // refused, reset, closed mid-transfer, no route
	ReasonTimeout      = "timeout"      // no answer in time
	ReasonServerError  = "server_error" // 5xx from the registry
	ReasonBadContent   = "bad_content"  // content that does not match its digest
	ReasonOther        = "other"
)
