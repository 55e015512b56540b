#!/usr/bin/env bash
# critest image conformance through cri-mirror-proxy, on a real containerd and a real registry.
#
#   bash test/critest.sh            # through the proxy (containerd has NO mirror config of its own)
#   bash test/critest.sh --direct   # baseline: critest straight at containerd, which mirrors the
#                                   # public hosts itself via certs.d hosts.toml (no proxy involved)
#   bash test/critest.sh --no-mirror  # negative control: containerd alone, no mirror anywhere;
#                                   # nothing passes (the pull-timeout spec only with slow sources),
#                                   # so this exits non-zero
#
#   CRITEST_RUNTIME=crio bash test/critest.sh   # the same through the proxy in front of CRI-O
#
# Env: CRITEST_RUNTIME (containerd|crio, default containerd), CRITEST_FOCUS, CRITEST_SKIP (ginkgo regexps), CRITEST_SPECS (how many specs they select:
# 12 for the default focus and skip, required with any other), CRI_MIRROR_PROXY_BIN (prebuilt
# binary, no build), CRITEST_PULL_FROM_MIRROR (tag-only|all, default tag-only), CMP_KEEP=1 (keep
# the temp dir).
#
# Only 127.0.0.1 is contacted: the public registries critest names (gcr.io, registry.k8s.io,
# k8s.gcr.io, docker.io, quay.io) are pointed at a closed loopback port in containerd's certs.d,
# and the images critest needs are pushed by tag to a local registry under
# 127.0.0.1:PORT/mirror/<source host>/...; the proxy's registries.conf maps each source host to it.
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

# The image tests of critest. "Image Consistency" (pull/list/remove ordering, concurrent removal)
# needs no containers; "Image Identifier Consistency" starts a pod and is out of scope here.
default_focus='Image Manager|Image Consistency'
default_skip='public image with digest should be pulled and removed'
: "${CRITEST_RUNTIME:=containerd}"
case $CRITEST_RUNTIME in
  containerd) ;;
  crio)
    # CRI-O's own mirroring would need its registries.conf mirrors; only the proxy is compared.
    [[ $mode == proxy ]] || cmp_die "CRITEST_RUNTIME=crio runs through the proxy only"
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
# in a new critest) fails instead of passing on what is left. 12 = the "Image Manager" and "Image
# Consistency" specs of critest v1.37.0 without the skipped one.
if [[ -z ${CRITEST_SPECS:-} ]]; then
  if [[ ${CRITEST_FOCUS:-$default_focus} != "$default_focus" || ${CRITEST_SKIP:-$default_skip} != "$default_skip" ]]; then
    cmp_die "CRITEST_FOCUS/CRITEST_SKIP changed: set CRITEST_SPECS to the number of specs they select"
  fi
  CRITEST_SPECS=12
fi
: "${CRITEST_FOCUS:=$default_focus}"
# Skipped: "public image with digest should be pulled and removed" pulls
# gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2... and asserts exactly that
# digest. A manifest with that digest can only be had from gcr.io (the digest is a hash of the
# real manifest bytes, which reference real layer blobs); this environment is offline, so no
# local mirror can serve it.
: "${CRITEST_SKIP:=$default_skip}"
: "${CRITEST_PULL_FROM_MIRROR:=tag-only}"
: "${CRITEST_TIMEOUT:=900}"

start=$SECONDS
cmp_init "" # a fresh /tmp/cmp.XXXXXX
status=1
on_exit() {
  local rc=$?
  if ((status != 0)); then
    cmp_log "critest ($mode) FAILED; logs follow"
    cmp_dump_logs 80
  fi
  cmp_down
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
else
  cmp_containerd_start
  runtime_sock=$CMP_CTD_SOCK
fi

cmp_log "pushing critest images under $mirror/<host>/"
cmp_push_critest_images "$mirror"

endpoint=$runtime_sock
if [[ $mode == proxy ]]; then
  cmp_build_proxy
  conf=$CMP_DIR/registries.conf
  cmp_registries_conf "$conf" "$mirror" "$CRITEST_PULL_FROM_MIRROR" "${CMP_PUBLIC_HOSTS[@]}"
  cmp_proxy_start "$conf" "$runtime_sock" --log-level debug
  endpoint=$CMP_PROXY_SOCK
fi

cmp_log "critest -ginkgo.focus='$CRITEST_FOCUS' -ginkgo.skip='$CRITEST_SKIP' against unix://$endpoint"
set +e
timeout --kill-after=30 "$CRITEST_TIMEOUT" critest \
  -runtime-endpoint "unix://$endpoint" -image-endpoint "unix://$endpoint" \
  -ginkgo.focus="$CRITEST_FOCUS" -ginkgo.skip="$CRITEST_SKIP" \
  -ginkgo.no-color -ginkgo.v 2>&1 | tee "$CMP_DIR/critest.out"
rc=${PIPESTATUS[0]}
set -e

echo
echo "===== critest summary ($mode, $CRITEST_RUNTIME, $((SECONDS - start))s) ====="
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
  echo "critest ($mode, $CRITEST_RUNTIME): PASS ($ran of the $CRITEST_SPECS expected specs)"
else
  echo "critest ($mode, $CRITEST_RUNTIME): FAIL (exit $rc, ran ${ran:-0} specs, expected $CRITEST_SPECS)"
  exit 1
fi
