#!/usr/bin/env bash
# `make run`: cri-mirror-proxy on this machine, end to end, then serving until Ctrl-C.
#
# Without RUNTIME_ENDPOINT (a fresh machine, no runtime configured):
#   installs what is missing (test/tools.sh), builds bin/cri-mirror-proxy, starts a local
#   registry on 127.0.0.1:$REGISTRY_PORT holding a small synthetic demo image as
#   127.0.0.1:5000/mirror/library/nginx:1.27, a containerd of its own (config/root/state/socket
#   under $DEMO_DIR; docker.io and the other public registries point at a closed loopback port,
#   so nothing leaves the machine), and the proxy in front of it with a registries.conf that
#   mirrors docker.io by tag to the local registry. It then pulls docker.io/library/nginx:1.27
#   through the proxy with crictl and shows what happened.
#
# With RUNTIME_ENDPOINT=unix:///run/containerd/containerd.sock (a real runtime): runs only the
#   proxy in front of it, with REGISTRIES_CONF (default: the same example rules).
#
# Env: RUNTIME_ENDPOINT, REGISTRIES_CONF, REGISTRY_PORT (5000), METRICS_ADDRESS (127.0.0.1:9464),
#      DEMO_DIR (/run/cri-mirror-proxy-demo), DEMO_DURATION (seconds to serve; default: until
#      Ctrl-C), CRI_MIRROR_PROXY_BIN (prebuilt binary: skip the build).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/lib.sh
source "$here/lib.sh"

: "${RUNTIME_ENDPOINT:=}"
: "${REGISTRY_PORT:=5000}"
: "${METRICS_ADDRESS:=127.0.0.1:9464}"
: "${DEMO_DURATION:=}"
if [[ -z ${DEMO_DIR:-} ]]; then
  DEMO_DIR=/run/cri-mirror-proxy-demo
  [[ -w /run ]] || DEMO_DIR=/tmp/cri-mirror-proxy-demo
fi

if [[ -n $RUNTIME_ENDPOINT && ! -S ${RUNTIME_ENDPOINT#unix://} ]]; then
  cmp_die "RUNTIME_ENDPOINT=$RUNTIME_ENDPOINT: no socket at ${RUNTIME_ENDPOINT#unix://}"
fi

# One demo at a time: a live pid file in DEMO_DIR means another demo is running.
for f in "$DEMO_DIR"/*.pid; do
  [[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null \
    && cmp_die "another demo is running ($f: pid $(cat "$f")); stop it first (Ctrl-C in its terminal)"
done
rm -rf "$DEMO_DIR"
cmp_log "installing what is missing (test/tools.sh)"
cmp_init "$DEMO_DIR"

failed=1
on_exit() {
  local rc=$?
  trap - INT TERM
  if ((failed)) && ((rc != 0)); then
    cmp_log "the demo failed; logs follow"
    cmp_dump_logs 40
  fi
  cmp_log "stopping everything the demo started"
  cmp_down
  exit "$rc"
}
trap on_exit EXIT
trap 'echo; exit 0' INT TERM
# Output gone (pipe closed, terminal hung up): clean up silently.
trap 'exec >/dev/null 2>&1; exit 141' PIPE HUP

# make build (CRI_MIRROR_PROXY_BIN: use that binary instead).
cmp_build_proxy

# A fixed metrics address is nicer to show; fall back to a free port when it is taken.
if cmp_port_free "${METRICS_ADDRESS##*:}"; then CMP_METRICS_ADDR=$METRICS_ADDRESS; fi
CMP_PROXY_SOCK=$DEMO_DIR/cri.sock
mirror=127.0.0.1:$REGISTRY_PORT/mirror

example_conf() {
  cat <<TOML
# Example mirror rules (registries.conf v2, as CRI-O and Podman read them): pulls of docker.io
# images by tag are tried on the local mirror first, then on docker.io itself.
[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "$mirror"
insecure = true
pull-from-mirror = "tag-only"
TOML
}

conf=${REGISTRIES_CONF:-$DEMO_DIR/registries.conf}
[[ -n ${REGISTRIES_CONF:-} ]] || example_conf >"$conf"
[[ -f $conf ]] || cmp_die "REGISTRIES_CONF=$conf does not exist"

if [[ -n $RUNTIME_ENDPOINT ]]; then
  rt=${RUNTIME_ENDPOINT#unix://}
  cmp_log "proxy in front of $RUNTIME_ENDPOINT with $conf"
  cmp_proxy_start "$conf" "$rt"
else
  # Fresh machine: registry + demo image + containerd.
  cmp_port_free "$REGISTRY_PORT" \
    || cmp_die "127.0.0.1:$REGISTRY_PORT is in use; set REGISTRY_PORT to a free port"
  cmp_log "registry on 127.0.0.1:$REGISTRY_PORT"
  cmp_registry_start registry "$REGISTRY_PORT"
  cmp_log "pushing a small synthetic demo image as $mirror/library/nginx:1.27"
  cmp_push "$mirror/library/nginx:1.27" "cri-mirror-proxy demo image (not nginx)"
  cmp_hosts_toml "127.0.0.1:$REGISTRY_PORT" "http://127.0.0.1:$REGISTRY_PORT"
  cmp_log "containerd under $DEMO_DIR/ctd (public registries point at closed port $CMP_CLOSED_PORT)"
  cmp_containerd_start
  rt=$CMP_CTD_SOCK
  cmp_log "cri-mirror-proxy in front of containerd"
  cmp_proxy_start "$conf" "$rt" --log-level debug
fi

# A crictl config for the proxy socket (also keeps crictl from warning about /etc/crictl.yaml).
crictl_conf=$DEMO_DIR/crictl.yaml
printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 120\n' "$CMP_PROXY_SOCK" "$CMP_PROXY_SOCK" >"$crictl_conf"
crictl_proxy=(crictl --config "$crictl_conf")
if [[ -t 1 ]]; then
  section() { printf '\n\033[1m## %s\033[0m\n' "$*"; }
else
  section() { printf '\n## %s\n' "$*"; }
fi

section "mirror rules ($conf)"
grep -vE '^\s*(#|$)' "$conf"

if [[ -z $RUNTIME_ENDPOINT ]]; then
  image=docker.io/library/nginx:1.27
  section "cri-mirror-proxy resolve $image  (candidates in order, and why)"
  "$CMP_PROXY_BIN" resolve --registries-conf "$conf" --registries-conf-dir "$DEMO_DIR/proxy/registries.conf.d" "$image"

  section "crictl pull $image  (through the proxy)"
  "${crictl_proxy[@]}" pull "$image"

  section "proxy log: the pull attempts"
  grep -iE 'attempt|pull' "$CMP_DIR/proxy.log" | grep -v '^===' || echo "(no attempt lines in $CMP_DIR/proxy.log)"

  section "crictl images  (the image under its original name)"
  "${crictl_proxy[@]}" images

  section "what containerd itself holds (crictl straight at containerd)"
  printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n' "$rt" "$rt" >"$DEMO_DIR/crictl-containerd.yaml"
  crictl --config "$DEMO_DIR/crictl-containerd.yaml" images

  section "metrics (http://$CMP_METRICS_ADDR/metrics, series at 0 left out)"
  curl -fsS "http://$CMP_METRICS_ADDR/metrics" | grep -E '^cri_mirror_' | grep -v '_bucket{' | awk '$NF != 0' || true
fi

failed=0
section "cri-mirror-proxy is serving"
cat <<EOT
  CRI socket:   unix://$CMP_PROXY_SOCK   (runtime and image endpoint)
  runtime:      unix://$rt
  metrics:      http://$CMP_METRICS_ADDR/metrics   (/healthz, /readyz)
  logs:         $CMP_DIR/*.log

  Point crictl at it (config written to $crictl_conf):
    $(command -v crictl) --config $crictl_conf pull docker.io/library/nginx:1.27
    $(command -v crictl) --config $crictl_conf images
  or: crictl --runtime-endpoint unix://$CMP_PROXY_SOCK --image-endpoint unix://$CMP_PROXY_SOCK images
  Reload the rules after editing $conf:  kill -HUP $(cat "$CMP_DIR/proxy.pid")

Press Ctrl-C to stop (everything started here is stopped and $DEMO_DIR removed).
EOT

pid=$(cat "$CMP_DIR/proxy.pid")
if [[ -n $DEMO_DURATION ]]; then
  for ((i = 0; i < DEMO_DURATION; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
else
  wait "$pid" || true
fi
if ! kill -0 "$pid" 2>/dev/null; then
  failed=1
  cmp_die "cri-mirror-proxy exited unexpectedly"
fi
