// Package e2e holds the end-to-end tests of cri-mirror-proxy on real parts: a real containerd
// (own config, root, state and socket under a temp dir), real docker-registry instances on
// 127.0.0.1 serving synthetic images, crictl and a Go CRI client talking to the proxy socket.
//
// The tests are behind the e2e build tag and need root, containerd, runc, docker-registry and
// crictl (bash test/tools.sh installs them):
//
//	go test -tags 'e2e containers_image_openpgp' -count=1 ./test/e2e/
//
// Set CRI_MIRROR_PROXY_BIN to test a prebuilt binary instead of building ./cmd/cri-mirror-proxy,
// and E2E_KEEP=1 to keep the temp dir (logs, configs) after the run.
package e2e
