package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// bareHead times a HEAD of one tag at a plain-HTTP registry over a kept
// connection, with the Accept header of a manifest request: one round trip
// to the registry, the least a check of the tag can cost.
type bareHead struct {
	url    string
	client *http.Client
}

// newBareHead is a bareHead of ref ("HOST/REPO:TAG") on registry.
func newBareHead(registry, ref string) *bareHead {
	repo, tag, _ := strings.Cut(strings.TrimPrefix(ref, registry+"/"), ":")
	return &bareHead{
		url:    fmt.Sprintf("http://%s/v2/%s/manifests/%s", registry, repo, tag),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second},
	}
}

func (h *bareHead) time(ctx context.Context) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, h.url, nil)
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
		return 0, fmt.Errorf("HEAD %s: %s, digest %q", h.url, resp.Status, resp.Header.Get("Docker-Content-Digest"))
	}
	return d, nil
}

func (h *bareHead) close() { h.client.CloseIdleConnections() }
