package testenv

import (
	"fmt"

	"go.podman.io/image/v5/docker/reference"
)

// Repository is ref without its tag or digest: "source.test/e2e/x:v1" → "source.test/e2e/x".
// ref must be a full reference (with its registry host), as runtimes name images; anything
// else is an error.
func Repository(ref string) (string, error) {
	named, err := reference.ParseNamed(ref)
	if err != nil {
		return "", fmt.Errorf("repository of %q: %w", ref, err)
	}
	return named.Name(), nil
}

// MustRepository is Repository for names a test wrote itself: it panics on a bad one.
func MustRepository(ref string) string {
	repo, err := Repository(ref)
	if err != nil {
		panic(err)
	}
	return repo
}
