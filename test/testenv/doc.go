// Package testenv holds what the real-parts tests share: the e2e tests (test/e2e), the
// benchmark driver (test/bench) and, through the small program test/envtool, the shell
// scripts (test/critest.sh, test/demo.sh, test/bench.sh via test/lib.sh).
//
//   - containerd.go: containerd's config.toml and certs.d hosts.toml files, so that every
//     environment configures containerd the same way (its own root, state and socket;
//     registries only through certs.d; the public registries at a closed loopback port);
//   - registry.go: docker-registry's config;
//   - images.go: synthetic linux images for this machine's architecture, and pushing them;
//   - busybox.go, cni.go: what a runtime needs to run pods as well as pull images: runnable
//     images on Debian's static busybox, a pod network of its own (CRIOptions in containerd.go
//     point containerd at them and at a sandbox image);
//   - reference.go: reference helpers the tests compare names with.
//
// Nothing here starts a process: each caller runs the programs its own way (the e2e harness
// as children of the test binary, the scripts by pid files), from the files written here.
package testenv
