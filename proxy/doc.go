// Package proxy serves the CRI v1 ImageService in front of a real container
// runtime (containerd, CRI-O) and relays the RuntimeService to it, unchanged
// but for the calls that name a container's image (runtime_service.go).
//
// PullImage is the one call it changes: the reference is resolved through the
// mirror rules into ordered candidates, each candidate is pulled by the
// runtime until one succeeds, and when the runtime stored the image under a
// mirror's name an alias remembers the name the caller asked for. The other
// image calls translate through the alias table, so callers see the image
// exactly as if the runtime had pulled the original reference itself.
package proxy
