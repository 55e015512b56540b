//go:build e2e && soak

package e2e

// soak selects the long variants of the fault and load tests (more pulls, more rounds).
const soak = true
