package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// bareHeads times HEADs of a tag at plain-HTTP registries over kept
// connections, with the Accept header of a manifest request, and nothing
// else: the round trip the tag check makes, at its floor. The check asks the
// source and the mirror at once, so its floor is the two HEADs sent
// together; one HEAD alone is timed too.
type bareHeads struct {
	source, mirror string // URLs
	client         *http.Client
}

// newBareHeads HEADs source and mirror ("HOST/REPO:TAG"), both on registry.
func newBareHeads(registry, source, mirror string) *bareHeads {
	url := func(ref string) string {
		repo, tag, _ := strings.Cut(strings.TrimPrefix(ref, registry+"/"), ":")
		return fmt.Sprintf("http://%s/v2/%s/manifests/%s", registry, repo, tag)
	}
	return &bareHeads{
		source: url(source), mirror: url(mirror),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}, Timeout: 10 * time.Second},
	}
}

// time returns, in this order: how long HEADs to the source and the mirror
// sent at once took until both answered, as the check finds the registry
// (after a pull, its first HEADs since); how long one HEAD to the source
// took; and the HEADs at once again, right after that one (warm: the
// registry has just answered the same tag).
func (h *bareHeads) time(ctx context.Context) (pair, one, warmPair time.Duration, err error) {
	if pair, err = h.pair(ctx); err != nil {
		return 0, 0, 0, err
	}
	if one, err = h.head(ctx, h.source); err != nil {
		return 0, 0, 0, err
	}
	if warmPair, err = h.pair(ctx); err != nil {
		return 0, 0, 0, err
	}
	return pair, one, warmPair, nil
}

// pair times HEADs to the source and the mirror sent at once.
func (h *bareHeads) pair(ctx context.Context) (time.Duration, error) {
	var wg sync.WaitGroup
	errs := make([]error, 2)
	start := time.Now()
	for i, url := range []string{h.source, h.mirror} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = h.head(ctx, url)
		}()
	}
	wg.Wait()
	d := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return d, nil
}

func (h *bareHeads) head(ctx context.Context, url string) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", strings.Join([]string{
		"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
		"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
	}, ", "))
	start := time.Now()
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, err
	}
	d := time.Since(start)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") == "" {
		return 0, fmt.Errorf("HEAD %s: %s, digest %q", url, resp.Status, resp.Header.Get("Docker-Content-Digest"))
	}
	return d, nil
}

func (h *bareHeads) close() { h.client.CloseIdleConnections() }
