#!/usr/bin/env bash
# Benchmark harness of cri-mirror-proxy (make bench): a real docker-registry and containerd
# (test/lib.sh), the proxy in front of containerd with its default pull settings, and the Go
# driver in test/bench, which measures proxy vs containerd vs a reference hop side by side and
# prints a table of ratios against its targets.
#
#   bash test/bench.sh                 # full run (about 16–19 minutes on 2 CPUs)
#   bash test/bench.sh -images 0       # quick run: skip the 5,000-image case
#   bash test/bench.sh -h              # every driver flag (rounds, concurrency, ...)
#
# Arguments go to the driver. Env: BENCH_OUT (results file, default test/bench/RESULTS.md),
# BENCH_PROFILE_DIR (save proxy and hop CPU profiles of the pass-through calls there),
# BENCH_COMPARE_BIN (a second proxy build, measured side by side in the pass-through phases),
# BENCH_PROXY_ARGS (extra proxy flags, for experiments),
# CRI_MIRROR_PROXY_BIN (prebuilt proxy, no build), CMP_KEEP=1 (keep the work dir and logs).
#
# Only 127.0.0.1 is used. Every process is started and stopped by pid through test/lib.sh
# (the driver stops its own reference-hop child), every wait is bounded.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/lib.sh
source "$here/lib.sh"

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"
  cd "$CMP_ROOT" && exec go run ./test/bench -h
fi

started=$(date +%s)
# shellcheck disable=SC2119 # cmp_init's optional argument is a work dir, not ours to pass on
cmp_init
ok=0
driver_pid=
on_exit() {
  local rc=$? i
  # The driver stops its own hop processes when it ends (SIGTERM, then they follow by Pdeathsig).
  if [[ -n $driver_pid ]] && kill -0 "$driver_pid" 2>/dev/null; then
    kill -TERM "$driver_pid" 2>/dev/null || true
    for ((i = 0; i < 75; i++)); do kill -0 "$driver_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$driver_pid" 2>/dev/null || true
  fi
  if ((ok == 0)); then
    cmp_log "bench FAILED (exit $rc); logs follow"
    cmp_dump_logs 40
  fi
  cmp_down
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

port=$(cmp_free_port)
blackhole=$(cmp_free_port)
while [[ $blackhole == "$port" || $blackhole == "$CMP_CLOSED_PORT" ]]; do blackhole=$(cmp_free_port); done
cmp_log "registry on 127.0.0.1:$port, refusing mirror :$CMP_CLOSED_PORT, black hole :$blackhole, work dir $CMP_DIR"
cmp_registry_start registry "$port"
cmp_hosts_toml "127.0.0.1:$port" "http://127.0.0.1:$port"
cmp_containerd_start

# The shipped binary, as `make build` makes it.
cmp_build_proxy

# The driver, built by cmp_init (make testbin).
driver=$CMP_DIR/bin/bench

conf=$CMP_DIR/registries.conf
# The driver's own flags go along: the rules depend on some of them (-fallback-reps).
"$driver" -print-conf -registry "127.0.0.1:$port" -closed-port "$CMP_CLOSED_PORT" -blackhole-port "$blackhole" "$@" >"$conf"
# Default pull settings on purpose (probe on, 2s probe timeout, 30s cool-down): the targets are
# about what a node gets out of the box.
# BENCH_PROXY_ARGS adds proxy flags for experiments (e.g. --probe=false); the targets are defined
# for the defaults.
read -r -a proxy_args <<<"${BENCH_PROXY_ARGS:-}"
# The profiles are read from the proxy's /debug/pprof/, which is off by default.
[[ -z ${BENCH_PROFILE_DIR:-} ]] || proxy_args=(--pprof "${proxy_args[@]}")
cmp_proxy_start "$conf" "$CMP_CTD_SOCK" "${proxy_args[@]}"
proxy_pid=$(cat "$CMP_DIR/proxy.pid")
[[ $(readlink "/proc/$proxy_pid/exe") == "$(readlink -f "$CMP_PROXY_BIN")" ]] \
  || cmp_die "pid $proxy_pid is not the proxy (its memory is measured by pid)"

# second_proxy NAME BIN ARGS...: another proxy on the same containerd and rules, with its own
# socket, state and metrics port; sets second_sock, second_pid, second_metrics.
second_proxy() {
  local name=$1 bin=$2 d=$CMP_DIR/$1
  shift 2
  mkdir -p "$d/state" "$d/registries.conf.d"
  second_sock=$d/cri.sock
  second_metrics=127.0.0.1:$(cmp_free_port)
  cmp_start "$name" "$bin" serve --listen "unix://$second_sock" --runtime-endpoint "unix://$CMP_CTD_SOCK" \
    --registries-conf "$conf" --registries-conf-dir "$d/registries.conf.d" --state-dir "$d/state" \
    --metrics-address "$second_metrics" "$@"
  cmp_wait 30 "$name /readyz on $second_metrics" curl -fsS "http://$second_metrics/readyz" \
    || cmp_die "the proxy $name did not start"
  second_pid=$(cat "$CMP_DIR/$name.pid")
}

# A proxy that probes before every pull (--probe-overlap=0), beside the default one in the
# mirror pull phase: what a pull from a mirror that has not answered lately costs.
second_proxy proxy-probe-first "$CMP_PROXY_BIN" --probe-overlap 0
probe_first=(-probe-first "$second_sock")

# A proxy with the tag check on for the driver's tag check case (its source is the registry itself,
# under tagsrc), beside the default one (no policy for it) in the mirror pull phase.
second_proxy proxy-tag-check "$CMP_PROXY_BIN" --tag-check "127.0.0.1:$port/tagsrc=source-required"
tag_check=(-tag-check-proxy "$second_sock" -tag-check-metrics "$second_metrics")

# Optional: a second proxy build side by side with the first in the pass-through phases, e.g.
# the same code before and after a change (BENCH_COMPARE_BIN=/path/to/other/cri-mirror-proxy).
compare=()
if [[ -n ${BENCH_COMPARE_BIN:-} ]]; then
  second_proxy proxy-b "$BENCH_COMPARE_BIN"
  compare=(-compare "$second_sock" -compare-pid "$second_pid" -compare-metrics "$second_metrics")
fi

out=${BENCH_OUT:-$CMP_ROOT/test/bench/RESULTS.md}
command="bash test/bench.sh${*:+ $*}"
[[ -z ${BENCH_PROXY_ARGS:-} ]] || command="BENCH_PROXY_ARGS=\"$BENCH_PROXY_ARGS\" $command"
"$driver" \
  -containerd "$CMP_CTD_SOCK" -containerd-log "$CMP_DIR/containerd.log" -containerd-pid "$(cat "$CMP_DIR/containerd.pid")" \
  -registry-pid "$(cat "$CMP_DIR/registry.pid")" \
  -proxy "$CMP_PROXY_SOCK" -proxy-pid "$proxy_pid" -metrics "$CMP_METRICS_ADDR" \
  -proxy-bin "$CMP_PROXY_BIN" -proxy-conf "$conf" \
  -registry "127.0.0.1:$port" -closed-port "$CMP_CLOSED_PORT" -blackhole-port "$blackhole" \
  -work-dir "$CMP_DIR" -profile-dir "${BENCH_PROFILE_DIR:-}" "${compare[@]}" "${probe_first[@]}" "${tag_check[@]}" \
  -out "$out" -command "$command" -since "$started" \
  -proxy-args "${BENCH_PROXY_ARGS:-}" \
  -revision "$(cd "$CMP_ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)" \
  "$@" &
# In the background and waited for, so that a signal to this script runs the trap at once.
driver_pid=$!
wait "$driver_pid"
driver_pid=
ok=1
cmp_log "bench done in $(($(date +%s) - started))s; results in $out"
