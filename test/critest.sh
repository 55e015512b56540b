#!/usr/bin/env bash
# critest through cri-mirror-proxy, on a real containerd and a real registry.
#
#   bash test/critest.sh            # through the proxy (containerd has NO mirror config of its own)
#   bash test/critest.sh --direct   # baseline: critest straight at containerd, which mirrors the
#                                   # public hosts itself via certs.d hosts.toml (no proxy involved)
#   bash test/critest.sh --no-mirror  # negative control: containerd alone, no mirror anywhere;
#                                   # no image spec passes (the pull-timeout spec only with slow
#                                   # sources), no runtime spec that needs an image (10 of 65 pass),
#                                   # so this exits non-zero
#
#   CRITEST_RUNTIME=crio bash test/critest.sh   # the same through the proxy in front of CRI-O
#   CRITEST_SUITE=runtime bash test/critest.sh  # the runtime specs (sandbox, container, exec,
#                                   # attach, logs, security context) instead of the image specs,
#                                   # with the proxy as both endpoints; --direct for the baseline
#
# Env: CRITEST_SUITE (image|runtime, default image), CRITEST_RUNTIME (containerd|crio, default
# containerd; the runtime suite runs in front of containerd only), CRITEST_FOCUS, CRITEST_SKIP
# (ginkgo regexps), CRITEST_SPECS (how many specs they select: 12 for the image suite's focus
# and skip, 62 for the runtime suite's, required with any other focus or skip),
# CRI_MIRROR_PROXY_BIN (prebuilt binary, no build), CRITEST_PULL_FROM_MIRROR (tag-only|all,
# default tag-only), CMP_KEEP=1 (keep the temp dir).
#
# Only 127.0.0.1 is contacted: the public registries critest names (gcr.io, registry.k8s.io,
# k8s.gcr.io, docker.io, quay.io) are pointed at a closed loopback port in containerd's certs.d,
# and the images critest needs are pushed by tag to a local registry under
# 127.0.0.1:PORT/mirror/<source host>/...; the proxy's registries.conf maps each source host to it.
# The runtime suite's images are runnable (Debian's static busybox, see test/envtool), its pods
# get a network of their own (a bridge of this run's, with no address or route on the host,
# deleted at the end), and every pod critest leaves is removed before containerd stops.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/lib.sh
source "$here/lib.sh"

mode=proxy
case ${1:-} in
  --direct) mode=direct ;;
  --no-mirror) mode=no-mirror ;;
  "") ;;
  *) cmp_die "usage: $0 [--direct|--no-mirror]" ;;
esac

# The runtime suite: every spec of critest v1.37.0 but those below, each left out for the
# reason beside it (test/README.md has the lists). What remains passes straight at
# containerd 1.6 on this machine (--direct) and must pass the same through the proxy.
critest_runtime_skips=(
  # The image suite's specs (CRITEST_SUITE=image).
  'Image Manager' 'Image Consistency'
  # Features containerd 1.6 or this kernel lack; critest skips them itself after asking the
  # runtime (left out so that the count stays exact): no AppArmor in this kernel, no NRI,
  # user namespaces, SupplementalGroupsPolicy, pod sandbox metrics or recursive read-only
  # mounts in containerd 1.6.
  'AppArmor' 'NRI' 'UserNamespaces' 'SupplementalGroupsPolicy' 'metrics operations'
  'support recursive readonly mounts' 'reject a recursive readonly mount'
  # containerd 1.6 has no image volumes.
  'Image Volume'
  # Images whose programs cannot be recreated offline: nginx (e2e-test-images/nginx,
  # hostnet-nginx: the PID namespace specs look for its processes, port mapping and
  # port-forward fetch its pages), httpd (Multiple Containers), nonewprivs (a setuid test
  # program).
  'support HostPID' 'support PodPID' 'support ContainerPID' 'port mapping' 'portforward'
  'Multiple Containers' 'NoNewPrivs'
  # Applets Debian's busybox-static does not have: ipcs (HostIpc), pgrep (execSync timeout).
  'support HostIpc' 'execSync with timeout'
  # Debian's busybox-static sh runs applets itself (FEATURE_SH_STANDALONE): masking /bin/ls
  # does not stop `sh -c ls`, which the spec expects to fail.
  'support MaskedPaths'
  # containerd 1.6 sometimes reports an OOM-killed container's reason as Error: the OOM event
  # can come after the exit (containerd issues 8180, 12260); seen once on this busy machine.
  'output OOMKilled reason'
  # containerd 1.6 answers NotFound where critest wants success (fixed in containerd 1.7).
  'StopPodSandbox should not return an error if not found'
  'StopContainer should not return an error if not found'
)
critest_runtime_focus() { echo '.'; }
critest_runtime_skip() { local IFS='|'; echo "${critest_runtime_skips[*]}"; }
CRITEST_RUNTIME_SPECS=62

# CRITEST_SUITE picks the specs: "image", critest's image tests, or "runtime", its runtime
# info, sandbox, container, exec/attach and security-context specs that run on this machine
# without a network (test/README.md lists them, and why each other spec is left out).
: "${CRITEST_SUITE:=image}"
case $CRITEST_SUITE in
  image)
    # "Image Consistency" (pull/list/remove ordering, concurrent removal) needs no containers;
    # "Image Identifier Consistency" starts a pod: the runtime suite runs it.
    default_focus='Image Manager|Image Consistency'
    # Skipped: "public image with digest should be pulled and removed" pulls
    # gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2... and asserts exactly
    # that digest. A manifest with that digest can only be had from gcr.io (the digest is a
    # hash of the real manifest bytes, which reference real layer blobs); this environment is
    # offline, so no local mirror can serve it.
    default_skip='public image with digest should be pulled and removed'
    # 12 = the "Image Manager" and "Image Consistency" specs of critest v1.37.0 without the
    # skipped one.
    default_specs=12
    ;;
  runtime)
    default_focus=$(critest_runtime_focus)
    default_skip=$(critest_runtime_skip)
    default_specs=$CRITEST_RUNTIME_SPECS
    ;;
  *) cmp_die "CRITEST_SUITE: image or runtime, not $CRITEST_SUITE" ;;
esac
: "${CRITEST_RUNTIME:=containerd}"
case $CRITEST_RUNTIME in
  containerd) ;;
  crio)
    # CRI-O's own mirroring would need its registries.conf mirrors; only the proxy is compared.
    [[ $mode == proxy ]] || cmp_die "CRITEST_RUNTIME=crio runs through the proxy only"
    # The runtime suite: CRI-O cannot start containers on this machine (runc fails to lower
    # oom_score_adj, which the machine forbids even to root; containerd has
    # restrict_oom_score_adj, CRI-O no such setting). See test/README.md.
    [[ $CRITEST_SUITE == image ]] || cmp_die "CRITEST_SUITE=$CRITEST_SUITE runs in front of containerd only"
    # "should not fail on simultaneous RemoveImage calls" fails about half the time straight at
    # CRI-O v1.34.0 with its own mirrors, no proxy involved (CRI-O's concurrent removal races):
    # it would measure CRI-O, not the proxy.
    if [[ -z ${CRITEST_SKIP:-} && -z ${CRITEST_SPECS:-} ]]; then
      CRITEST_SKIP='public image with digest should be pulled and removed|should not fail on simultaneous RemoveImage calls'
      CRITEST_SPECS=11
    fi
    ;;
  *) cmp_die "CRITEST_RUNTIME: containerd or crio, not $CRITEST_RUNTIME" ;;
esac

# The run must select exactly this many specs: a focus that matches fewer (a typo, a spec renamed
# in a new critest) fails instead of passing on what is left.
if [[ -z ${CRITEST_SPECS:-} ]]; then
  if [[ ${CRITEST_FOCUS:-$default_focus} != "$default_focus" || ${CRITEST_SKIP:-$default_skip} != "$default_skip" ]]; then
    cmp_die "CRITEST_FOCUS/CRITEST_SKIP changed: set CRITEST_SPECS to the number of specs they select"
  fi
  CRITEST_SPECS=$default_specs
fi
: "${CRITEST_FOCUS:=$default_focus}"
: "${CRITEST_SKIP:=$default_skip}"
: "${CRITEST_PULL_FROM_MIRROR:=tag-only}"
: "${CRITEST_TIMEOUT:=900}"

start=$SECONDS
cmp_init "" # a fresh /tmp/cmp.XXXXXX
status=1
on_exit() {
  local rc=$? i
  if [[ -n ${critest_pid:-} ]] && kill -0 "$critest_pid" 2>/dev/null; then
    # Interrupted: timeout passes SIGTERM on to critest, which runs its specs' cleanup (their
    # pods go) and stops; SIGKILL after 30s.
    cmp_log "stopping critest (pid $critest_pid)"
    kill -TERM "$critest_pid" 2>/dev/null
    for ((i = 0; i < 150; i++)); do kill -0 "$critest_pid" 2>/dev/null || break; sleep 0.2; done
    # timeout leads a process group of its own, critest in it.
    kill -KILL -- "-$critest_pid" 2>/dev/null
  fi
  [[ -n ${tail_pid:-} ]] && kill "$tail_pid" 2>/dev/null
  if ((status != 0)); then
    cmp_log "critest $CRITEST_SUITE ($mode) FAILED; logs follow"
    cmp_dump_logs 80
  fi
  # Pods critest left behind (a failed or interrupted spec) go before containerd does.
  cmp_containerd_pods_down
  cmp_down
  if [[ -n ${bridge:-} ]] && ip link show "$bridge" >/dev/null 2>&1; then
    ip link del "$bridge" || cmp_log "cannot delete the pod network's bridge $bridge"
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM
# Output gone (pipe closed, terminal hung up): clean up silently.
trap 'exec >/dev/null 2>&1; exit 141' PIPE HUP

port=$(cmp_free_port)
mirror=127.0.0.1:$port/mirror
cmp_log "registry on 127.0.0.1:$port, work dir $CMP_DIR"
cmp_registry_start registry "$port"
cmp_hosts_toml "127.0.0.1:$port" "http://127.0.0.1:$port"
if [[ $mode == direct ]]; then
  # containerd mirrors each public host itself: http://127.0.0.1:PORT/v2/mirror/<host>/...
  for h in "${CMP_PUBLIC_HOSTS[@]}"; do
    cmp_hosts_toml "$h" "http://127.0.0.1:$port" "/v2/mirror/$h"
  done
fi
if [[ $CRITEST_RUNTIME == crio ]]; then
  cmp_crio_start "127.0.0.1:$port=127.0.0.1:$port"
  runtime_sock=$CMP_CRIO_SOCK
elif [[ $CRITEST_SUITE == runtime ]]; then
  # Pods need a sandbox image and a pod network. containerd pulls the sandbox image by itself,
  # from the local registry as itself (not through the proxy: the sandbox is the runtime's own
  # business). The network: a bridge of this run's own (deleted on exit), no address on the
  # host, no route out.
  sandbox=127.0.0.1:$port/critest/pause:1
  bridge=cmp-${CMP_DIR##*.}
  subnet=10.$((RANDOM % 200 + 20)).$((RANDOM % 256)).0/24
  "$CMP_ENVTOOL" cni "$CMP_DIR/cni" "$bridge" "$subnet" || cmp_die "writing the pod network failed"
  cmp_containerd_start -sandbox-image="$sandbox" -cni="$CMP_DIR/cni" -cgroups
  runtime_sock=$CMP_CTD_SOCK
else
  cmp_containerd_start
  runtime_sock=$CMP_CTD_SOCK
fi

cmp_log "pushing critest $CRITEST_SUITE images under $mirror/<host>/"
if [[ $CRITEST_SUITE == runtime ]]; then
  cmp_push_critest_runtime_images "$mirror" "$sandbox"
else
  cmp_push_critest_images "$mirror"
fi

endpoint=$runtime_sock
if [[ $mode == proxy ]]; then
  cmp_build_proxy
  conf=$CMP_DIR/registries.conf
  cmp_registries_conf "$conf" "$mirror" "$CRITEST_PULL_FROM_MIRROR" "${CMP_PUBLIC_HOSTS[@]}"
  cmp_proxy_start "$conf" "$runtime_sock" --log-level debug
  endpoint=$CMP_PROXY_SOCK
fi

cmp_log "critest -ginkgo.focus='$CRITEST_FOCUS' -ginkgo.skip='$CRITEST_SKIP' against unix://$endpoint"
# critest runs in the background and the script waits for it: a signal interrupts `wait` (it
# would wait for a command in the foreground to end), so an interrupted run stops critest and
# cleans up at once. The output is followed live.
set +e
: >"$CMP_DIR/critest.out" # before tail looks for it
timeout --kill-after=30 "$CRITEST_TIMEOUT" critest \
  -runtime-endpoint "unix://$endpoint" -image-endpoint "unix://$endpoint" \
  -ginkgo.focus="$CRITEST_FOCUS" -ginkgo.skip="$CRITEST_SKIP" \
  -ginkgo.no-color -ginkgo.v >>"$CMP_DIR/critest.out" 2>&1 &
critest_pid=$!
tail -n +1 -f --pid="$critest_pid" "$CMP_DIR/critest.out" &
tail_pid=$!
wait "$critest_pid"
rc=$?
wait "$tail_pid"
critest_pid= tail_pid=
set -e

echo
echo "===== critest $CRITEST_SUITE summary ($mode, $CRITEST_RUNTIME, $((SECONDS - start))s) ====="
grep -E '^(Ran [0-9]+ of [0-9]+ Specs|SUCCESS!|FAIL!)' "$CMP_DIR/critest.out" || true
grep -E '^\s*\[FAIL\]' "$CMP_DIR/critest.out" | sort -u || true
if ((rc == 124)); then echo "critest timed out after ${CRITEST_TIMEOUT}s"; fi
ran=$(sed -nE 's/^Ran ([0-9]+) of.*/\1/p' "$CMP_DIR/critest.out" | tail -n1)
if [[ $mode == proxy ]]; then
  # Evidence that the proxy did the mirroring: its pull attempts by mirror and result.
  echo "proxy metrics:"
  curl -fsS "http://$CMP_METRICS_ADDR/metrics" >"$CMP_DIR/metrics.txt" || cmp_log "could not scrape http://$CMP_METRICS_ADDR/metrics"
  grep -E '^cri_mirror_(pull_attempts_total|pulls_total|pull_fallbacks_total|source_pulls_total|aliases)' "$CMP_DIR/metrics.txt" | sed 's/^/  /' || true
  served=$("$CMP_ENVTOOL" metric "$CMP_METRICS_ADDR" cri_mirror_pull_attempts_total result=success 'mirror!=source') \
    || { cmp_log "could not read the proxy's metrics"; served=0; }
  if [[ $served == 0 ]]; then
    echo "no pull was served by a mirror through the proxy"
    rc=1
  fi
fi
if ((rc == 0)) && [[ ${ran:-0} == "$CRITEST_SPECS" ]]; then
  status=0
  echo "critest $CRITEST_SUITE ($mode, $CRITEST_RUNTIME): PASS ($ran of the $CRITEST_SPECS expected specs)"
else
  echo "critest $CRITEST_SUITE ($mode, $CRITEST_RUNTIME): FAIL (exit $rc, ran ${ran:-0} specs, expected $CRITEST_SPECS)"
  exit 1
fi
