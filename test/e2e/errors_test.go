//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	crierrors "k8s.io/cri-api/pkg/errors"
)

// TestPullErrors: the code and message of a pull that fails, in front of each runtime. A bad
// reference is refused by the proxy itself. An unauthorized pull and an unreachable registry
// get Unknown from both runtimes, with wording that is each runtime's own (containerd: "401
// Unauthorized"; CRI-O: the registry's error code, "unauthorized"), and so Unknown through the
// proxy: only CRI-O marks an unreachable registry, with the reason kubelet reads from the start
// of the message ("RegistryUnavailable", k8s.io/cri-api/pkg/errors), and the proxy's message
// starts with it too. (A tag no candidate has is NotFound on both: TestFallback.)
func TestPullErrors(t *testing.T) {
	eachRuntime(t, func(t *testing.T, rt *criRuntime) {
		mustPushRandom(t, env.source.host+"/e2e/errors:v1")
		front := newRegistryFront(t, env.source.host)
		front.user, front.pass = "user", "secret"
		rt.allowHost(t, front.host, "http://"+front.host)
		p := startProxyOn(t, rt, registriesConf(rule{prefix: blockedHost, blocked: true}))
		refused := fmt.Sprintf("127.0.0.1:%d/e2e/errors:v1", env.closedPort)
		var wantUnavailable error
		if rt.marksUnavailable {
			wantUnavailable = crierrors.ErrRegistryUnavailable
		}
		for _, tc := range []struct {
			name, ref string
			code      codes.Code
			says      string // in the message, lower case
			reason    error  // at the message's start
		}{
			{"bad reference", sourceHost + "/UPPER/x:v1", codes.InvalidArgument, "repository name must be lowercase", nil},
			{"unauthorized", front.host + "/e2e/errors:v1", codes.Unknown, "unauthorized", nil},
			{"connection refused", refused, codes.Unknown, "connection refused", wantUnavailable},
		} {
			_, err := p.pull(tc.ref)
			t.Logf("%s: %s", tc.name, grpcMessage(err))
			msg := status.Convert(err).Message()
			if status.Code(err) != tc.code || !strings.Contains(strings.ToLower(msg), tc.says) {
				t.Errorf("%s: PullImage(%s) = %s; want %s saying %q", tc.name, tc.ref, grpcMessage(err), tc.code, tc.says)
			}
			for _, reason := range []error{crierrors.ErrRegistryUnavailable, crierrors.ErrSignatureValidationFailed} {
				if has := strings.HasPrefix(msg, reason.Error()); has != (reason == tc.reason) {
					t.Errorf("%s: the message starts with %s: %v, want %v", tc.name, reason, has, !has)
				}
			}
		}
	})
}
