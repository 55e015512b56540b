package proxy

import "context"

// A mirror reference pulled by its own name ("127.0.0.1:5000/mirror/x:t"
// asked for as such) is a name the caller wants to see, even when an alias
// of the same image hides that name as the mirror it pulled an original
// from. Such pulls are recorded as kept names (PullImage calls keepOwnName),
// and translate leaves them in place.

// keepOwnName records image as a kept name of the image its pull brought
// (the runtime answered imageRef) when it lies under a mirror location (only
// such a name can be hidden) and is not itself an original the proxy aliased
// (those are shown anyway). A failure to record costs only the name's
// visibility; the pull succeeded.
func (s *Server) keepOwnName(ctx context.Context, image, imageRef string) {
	named, ok := s.names.normalize(image)
	if !ok || imageRef == "" {
		return
	}
	name := named.String()
	if _, aliased := s.aliases.Get(name); aliased || len(s.resolver.Originals(name)) == 0 {
		return
	}
	// CRI-O answers with a digest reference, not the id.
	id, err := s.pulledImageID(ctx, name, imageRef)
	if err == nil {
		err = s.aliases.KeepName(name, id)
	}
	if err != nil {
		s.log.WithError(err).WithField("image", name).Warn("cannot record a mirror name pulled by itself; it may be shown under its original name only")
	}
}
