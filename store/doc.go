// Package store is the proxy's persistent alias table.
//
// When the proxy satisfies a pull of "gcr.io/x/y:t" from a mirror, the runtime
// knows the image only under the mirror reference it pulled. The store records
// original name → runtime image id so that ImageStatus, ListImages and
// RemoveImage can answer under the name kubelet asked for.
//
// Reads sit on kubelet's hot path (ImageStatus before every container start,
// ListImages across thousands of aliases), so every read is served from memory
// under an RWMutex. Writes are rare: each one commits to a bbolt file first
// and only then changes memory, so a failed write never leaves memory claiming
// something the disk does not hold. Writers are serialised by their own mutex
// so that readers never wait for an fsync.
//
// On-disk layout (bbolt):
//
//	meta/schema      "1"
//	aliases/<Name>   JSON {"name","image_id","mirror","created"}
//	kept/<Name>      image id (kept.go)
//	tags/<Tag ref>   JSON {"digest","seen"} (tags.go)
//
// A value that cannot be decoded at Open is skipped with a logged warning
// rather than refusing to start: the table only saves re-pulls, and a proxy
// that will not start stops every image pull on the node. A skipped alias
// heals itself: its ImageStatus answers "not found", kubelet pulls again, and
// the new Put overwrites the bad value. A schema version newer than this
// binary understands is, by contrast, a hard error, since guessing at a newer
// format could silently drop or misread every alias.
//
// For the same reason a damaged file (bbolt panics or faults on some torn or
// truncated files rather than returning an error) is moved aside and
// replaced by an empty table, and a file that cannot be written (a read-only
// state directory) leaves the table in memory only. Open reports both; the
// caller rebuilds what it can from the runtime.
package store
