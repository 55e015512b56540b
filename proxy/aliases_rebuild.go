package proxy

import (
	"context"
	"fmt"
	"slices"

	"github.com/sirupsen/logrus"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/metrics"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
)

// RebuildAliases recovers the alias table from the runtime, for when it was
// lost (a wiped state directory, a damaged database moved aside): every
// image the runtime holds under a name that the loaded rules can only have
// produced for one original reference gets that alias back. A name that
// fits several originals, and an original that fits several images, are
// left alone and reported. Aliases already in the table are kept.
//
// It returns how many aliases were restored and how many names were
// ambiguous.
func (s *Server) RebuildAliases(ctx context.Context) (restored, ambiguous int, err error) {
	resp, err := s.images.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		return 0, 0, fmt.Errorf("rebuild aliases: list the runtime's images: %w", err)
	}

	type found struct {
		alias store.Alias
		ids   []string
	}
	byName := map[string]*found{}
	var order []string
	for _, img := range resp.GetImages() {
		for _, name := range rebuildNames(img) {
			origs := s.resolver.Originals(name)
			// The runtime holds the original name itself: nothing to alias.
			origs = slices.DeleteFunc(origs, func(o string) bool {
				return slices.Contains(img.GetRepoTags(), o) || slices.Contains(img.GetRepoDigests(), o)
			})
			switch len(origs) {
			case 0:
				continue
			case 1:
			default:
				ambiguous++
				s.log.WithFields(logrus.Fields{"image": name, "image_id": img.GetId(), "originals": origs}).
					Warn("rebuild aliases: the rules map this image name back to more than one original name; none recorded")
				continue
			}
			f := byName[origs[0]]
			if f == nil {
				f = &found{alias: store.Alias{Name: origs[0], ImageID: img.GetId(), Mirror: name}}
				byName[origs[0]] = f
				order = append(order, origs[0])
			}
			if !slices.Contains(f.ids, img.GetId()) {
				f.ids = append(f.ids, img.GetId())
			}
		}
	}

	var restore []store.Alias
	for _, name := range order {
		f := byName[name]
		if len(f.ids) > 1 {
			ambiguous++
			s.log.WithFields(logrus.Fields{"image": name, "image_ids": f.ids}).
				Warn("rebuild aliases: more than one runtime image maps back to this original name; none recorded")
			continue
		}
		restore = append(restore, f.alias)
	}
	restored, err = s.aliases.Restore(restore)
	s.metrics.AliasesRebuilt.WithLabelValues(metrics.RebuildRestored).Add(float64(restored))
	s.metrics.AliasesRebuilt.WithLabelValues(metrics.RebuildAmbiguous).Add(float64(ambiguous))
	if err != nil {
		return restored, ambiguous, fmt.Errorf("rebuild aliases: %w", err)
	}
	return restored, ambiguous, nil
}

// rebuildNames are the names of img that may have been pulled for an
// original: its tags, and its digests in repositories without a tag (a pull
// by digest leaves no tag; a pull by tag leaves a digest too, which needs no
// alias of its own).
func rebuildNames(img *runtimeapi.Image) []string {
	names := slices.Clone(img.GetRepoTags())
	for _, d := range img.GetRepoDigests() {
		if !slices.ContainsFunc(img.GetRepoTags(), func(t string) bool { return repoOf(t) == repoOf(d) }) {
			names = append(names, d)
		}
	}
	return names
}
