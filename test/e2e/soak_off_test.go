//go:build e2e && !soak

package e2e

// soak selects the long variants of the fault and load tests: build with the soak tag
// (go test -tags 'e2e soak containers_image_openpgp' ./test/e2e/).
const soak = false
