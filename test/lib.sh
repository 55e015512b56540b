# shellcheck shell=bash
# Shared shell helpers for test/critest.sh, test/demo.sh and test/bench.sh: a real
# docker-registry, a real containerd with its own config/root/state/socket, synthetic images,
# and the proxy. What the files say and what the images hold comes from test/testenv (the same
# package the e2e tests use), through the small program test/envtool ($CMP_ENVTOOL); this file
# only starts, waits for and stops processes. Everything listens on 127.0.0.1 only; every
# process started here is recorded by pid and stopped by pid in cmp_down; every wait is bounded.
#
#   source test/lib.sh
#   cmp_init                       # CMP_DIR=/tmp/cmp.XXXXXX, PATH += test/.bin (runs tools.sh),
#                                  # builds envtool and the bench driver into $CMP_DIR/bin
#   cmp_registry_start reg PORT    # docker-registry on 127.0.0.1:PORT, data under $CMP_DIR/reg
#   cmp_containerd_start           # socket $CMP_CTD_SOCK; public registries -> a closed port
#   cmp_push REF CONTENT [USER]    # one-layer linux image whose layer holds CONTENT
#   cmp_proxy_start CONF           # socket $CMP_PROXY_SOCK, metrics on $CMP_METRICS_ADDR
#   cmp_down                       # stop everything by pid (reverse order), remove $CMP_DIR

CMP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The public registries (testenv.PublicHosts): pointed at a closed port, mirrored in critest.sh.
CMP_PUBLIC_HOSTS=(docker.io registry.k8s.io k8s.gcr.io gcr.io quay.io)
CMP_NAMES=()   # started processes, in start order: name -> $CMP_DIR/NAME.pid / NAME.log

cmp_log() { printf '==> %s\n' "$*" >&2; }
cmp_die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# cmp_wait SECONDS DESCRIPTION COMMAND...: run COMMAND every 0.2s until it succeeds, at most SECONDS.
cmp_wait() {
  local secs=$1 desc=$2 i; shift 2
  for ((i = 0; i < secs * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  printf 'ERROR: timed out after %ss waiting for %s\n' "$secs" "$desc" >&2
  return 1
}

# cmp_port_free PORT: true when nothing accepts connections on 127.0.0.1:PORT.
cmp_port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# cmp_free_port: print a port on 127.0.0.1 that nothing listens on (at most 100 tries), below
# the kernel's ephemeral range: a port in that range may be the local end of an outgoing
# connection (pushes, pulls) by the time the port is bound, and the bind then fails.
cmp_free_port() {
  local i p lo
  read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || lo=32768
  ((lo > 12000)) || cmp_die "the ephemeral port range starts at $lo: no room below it for test ports"
  for ((i = 0; i < 100; i++)); do
    p=$((10000 + RANDOM % (lo - 10000)))
    cmp_port_free "$p" && { echo "$p"; return 0; }
  done
  cmp_die "no free port found on 127.0.0.1"
}

cmp_init() {
  local bin
  bin=$(bash "$CMP_ROOT/test/tools.sh" | tail -n1) || cmp_die "test/tools.sh failed"
  export PATH="$bin:$PATH"
  command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"
  # Short path: unix socket paths must stay under 108 bytes.
  CMP_DIR=${1:-$(mktemp -d /tmp/cmp.XXXXXX)}
  mkdir -p "$CMP_DIR"
  CMP_CLOSED_PORT=$(cmp_free_port)
  make -C "$CMP_ROOT" --no-print-directory testbin TESTBIN="$CMP_DIR/bin" >&2 || cmp_die "make testbin failed"
  CMP_ENVTOOL=$CMP_DIR/bin/envtool
  export CMP_DIR CMP_CLOSED_PORT CMP_ENVTOOL
}

# cmp_start NAME COMMAND...: start COMMAND in its own session, log to $CMP_DIR/NAME.log.
cmp_start() {
  local name=$1; shift
  setsid "$@" >"$CMP_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$CMP_DIR/$name.pid"
  CMP_NAMES+=("$name")
}

# cmp_stop NAME: SIGTERM the recorded pid, wait up to 15s, then SIGKILL.
cmp_stop() {
  local name=$1 pid i
  [[ -f $CMP_DIR/$name.pid ]] || return 0
  pid=$(cat "$CMP_DIR/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 75; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      cmp_log "$name (pid $pid) did not stop after SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$CMP_DIR/$name.pid"
}

cmp_alive() { [[ -f $CMP_DIR/$1.pid ]] && kill -0 "$(cat "$CMP_DIR/$1.pid")" 2>/dev/null; }

# cmp_down: stop everything started, newest first; remove $CMP_DIR unless CMP_KEEP=1.
cmp_down() {
  local i
  [[ -n ${CMP_DIR:-} && -d $CMP_DIR ]] || return 0
  for ((i = ${#CMP_NAMES[@]} - 1; i >= 0; i--)); do cmp_stop "${CMP_NAMES[i]}"; done
  # CRI-O's overlay driver mounts its home and unmounts it when stopped; a killed CRI-O
  # leaves it mounted. Deepest first.
  local m
  for m in $(awk -v d="$CMP_DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null || cmp_log "cannot unmount $m"
  done
  if [[ ${CMP_KEEP:-0} == 1 ]]; then
    cmp_log "keeping $CMP_DIR (CMP_KEEP=1)"
  else
    # containerd may leave read-only snapshot dirs; make them removable first.
    chmod -R u+w "$CMP_DIR" 2>/dev/null || true
    rm -rf "$CMP_DIR"
  fi
}

# cmp_dump_logs [LINES]: print the tail of every log (for failure reports).
cmp_dump_logs() {
  local n=${1:-60} f
  for f in "$CMP_DIR"/*.log; do
    [[ -f $f ]] || continue
    printf '\n----- %s (last %s lines) -----\n' "$f" "$n" >&2
    tail -n "$n" "$f" >&2
  done
}

# cmp_registry_start NAME PORT: docker-registry (distribution) serving plain HTTP on 127.0.0.1:PORT.
cmp_registry_start() {
  local name=$1 port=$2 d=$CMP_DIR/$1
  cmp_port_free "$port" || cmp_die "127.0.0.1:$port is already in use (registry $name)"
  local conf
  conf=$("$CMP_ENVTOOL" registry "$d" "127.0.0.1:$port" "${CMP_REGISTRY_LOG_LEVEL:-warn}") \
    || cmp_die "writing the config of registry $name failed"
  cmp_start "$name" docker-registry serve "$conf"
  cmp_wait 20 "registry $name on 127.0.0.1:$port" curl -fsS "http://127.0.0.1:$port/v2/" \
    || { cmp_dump_logs 60; cmp_die "registry $name did not start"; }
}

# cmp_hosts_toml HOST URL: containerd resolves HOST (a registry host[:port]) at URL (http://...).
# With a third argument (a path such as /v2/mirror/gcr.io) the host is a mirror at that path.
cmp_hosts_toml() {
  if [[ -z ${3:-} ]]; then
    "$CMP_ENVTOOL" host "$CMP_DIR/ctd" "$1" "$2" || cmp_die "writing hosts.toml of $1 failed"
  else
    "$CMP_ENVTOOL" host "$CMP_DIR/ctd" "$1" "$2" "$3" "http://127.0.0.1:$CMP_CLOSED_PORT" \
      || cmp_die "writing hosts.toml of $1 failed"
  fi
}

# cmp_containerd_start [OPTION...]: containerd with its own root/state/socket. Every public
# registry host is pointed at a closed loopback port, so nothing leaves the machine and a pull
# from a source fails at once (connection refused). Hosts already configured (cmp_hosts_toml)
# are kept. OPTIONs go to `envtool containerd` (-sandbox-image=REF, -cni=DIR, -cgroups).
cmp_containerd_start() {
  local d=$CMP_DIR/ctd
  CMP_CTD_SOCK=$("$CMP_ENVTOOL" containerd "$d" "http://127.0.0.1:$CMP_CLOSED_PORT" "$@") \
    || cmp_die "writing the containerd config failed"
  cmp_start containerd containerd --config "$d/config.toml"
  cmp_wait 30 "containerd socket $CMP_CTD_SOCK" \
    crictl --runtime-endpoint "unix://$CMP_CTD_SOCK" --image-endpoint "unix://$CMP_CTD_SOCK" --timeout 2s version \
    || { cmp_dump_logs 60; cmp_die "containerd did not start"; }
  export CMP_CTD_SOCK
}

# cmp_crio_start [HOST=ADDR...]: CRI-O (built by test/tools.sh) with its own root, run dir and
# socket, and no mirrors of its own: each HOST (a registry host:port) is reached at ADDR over
# plain HTTP, every public registry host at the closed loopback port.
cmp_crio_start() {
  local d=$CMP_DIR/crio args=()
  "$CMP_ENVTOOL" crio "$d" "$(command -v pinns)" "127.0.0.1:$CMP_CLOSED_PORT" "$@" >"$CMP_DIR/crio.args" \
    || cmp_die "writing the CRI-O config failed"
  mapfile -t args <"$CMP_DIR/crio.args"
  CMP_CRIO_SOCK=$d/crio.sock
  cmp_start crio crio "${args[@]}"
  cmp_wait 60 "CRI-O socket $CMP_CRIO_SOCK" \
    crictl --runtime-endpoint "unix://$CMP_CRIO_SOCK" --image-endpoint "unix://$CMP_CRIO_SOCK" --timeout 2s version \
    || { cmp_dump_logs 60; cmp_die "CRI-O did not start"; }
  export CMP_CRIO_SOCK
}

# cmp_push REF CONTENT [USER]: push a one-layer linux/<host arch> image (layer: /content.txt with
# CONTENT), optionally with Config.User set, over plain HTTP.
cmp_push() {
  "$CMP_ENVTOOL" push "$@" || cmp_die "push $1 failed"
}

# cmp_push_critest_images MIRROR: the images critest's image tests name, pushed under
# MIRROR/<source host>/<path> (the list is in test/envtool).
cmp_push_critest_images() {
  "$CMP_ENVTOOL" push-critest "$1" || cmp_die "pushing the critest images under $1 failed"
}

# cmp_push_critest_runtime_images MIRROR SANDBOX: the runnable images critest's container and
# sandbox specs name, under MIRROR/<source host>/<path>, and the pause image as SANDBOX.
cmp_push_critest_runtime_images() {
  "$CMP_ENVTOOL" push-critest-runtime "$1" "$2" || cmp_die "pushing the critest runtime images under $1 failed"
}

# cmp_containerd_pods_down: stop and remove every pod containerd runs, so that no shim,
# mount or network namespace outlives it (containerd keeps its netns under /var/run/netns).
cmp_containerd_pods_down() {
  [[ -n ${CMP_CTD_SOCK:-} ]] && cmp_alive containerd || return 0
  local c=(crictl --runtime-endpoint "unix://$CMP_CTD_SOCK" --image-endpoint "unix://$CMP_CTD_SOCK" --timeout 20s)
  local ids
  ids=$(timeout 30 "${c[@]}" pods -q 2>/dev/null) || return 0
  [[ -n $ids ]] || return 0
  cmp_log "removing the pods left at containerd"
  # shellcheck disable=SC2086 # one id per word
  timeout 120 "${c[@]}" rmp -f $ids >/dev/null 2>&1 || cmp_log "could not remove every pod"
}

# cmp_build_proxy: CMP_PROXY_BIN = $CRI_MIRROR_PROXY_BIN when set, else bin/cri-mirror-proxy built
# by `make build` (version-stamped).
cmp_build_proxy() {
  if [[ -n ${CRI_MIRROR_PROXY_BIN:-} ]]; then
    CMP_PROXY_BIN=$CRI_MIRROR_PROXY_BIN
  else
    CMP_PROXY_BIN=$CMP_ROOT/bin/cri-mirror-proxy
    cmp_log "make build"
    make -C "$CMP_ROOT" --no-print-directory build >&2 || cmp_die "make build failed"
  fi
  [[ -x $CMP_PROXY_BIN ]] || cmp_die "no proxy binary at $CMP_PROXY_BIN"
  export CMP_PROXY_BIN
}

# cmp_proxy_start CONF RUNTIME_SOCK [EXTRA ARGS...]: serve on $CMP_DIR/proxy/cri.sock.
cmp_proxy_start() {
  local conf=$1 rt=$2 d=$CMP_DIR/proxy; shift 2
  mkdir -p "$d/state" "$d/registries.conf.d"
  CMP_PROXY_SOCK=${CMP_PROXY_SOCK:-$d/cri.sock}
  CMP_METRICS_ADDR=${CMP_METRICS_ADDR:-127.0.0.1:$(cmp_free_port)}
  cmp_start proxy "$CMP_PROXY_BIN" serve \
    --listen "unix://$CMP_PROXY_SOCK" --runtime-endpoint "unix://$rt" \
    --registries-conf "$conf" --registries-conf-dir "$d/registries.conf.d" \
    --state-dir "$d/state" --metrics-address "$CMP_METRICS_ADDR" "$@"
  cmp_wait 30 "proxy socket $CMP_PROXY_SOCK" \
    crictl --runtime-endpoint "unix://$CMP_PROXY_SOCK" --image-endpoint "unix://$CMP_PROXY_SOCK" --timeout 2s version \
    || { cmp_dump_logs 60; cmp_die "cri-mirror-proxy did not start"; }
  cmp_wait 20 "proxy /readyz on $CMP_METRICS_ADDR" curl -fsS "http://$CMP_METRICS_ADDR/readyz" \
    || { cmp_dump_logs 60; cmp_die "cri-mirror-proxy is not ready"; }
  export CMP_PROXY_SOCK CMP_METRICS_ADDR
}

# cmp_registries_conf FILE MIRROR_BASE POLICY HOST...: one [[registry]] per HOST, mirrored by
# MIRROR_BASE/HOST with pull-from-mirror = POLICY.
cmp_registries_conf() {
  local f=$1 base=$2 policy=$3 h; shift 3
  {
    echo '# Written by test/lib.sh: every source registry is mirrored by the local registry.'
    for h in "$@"; do
      printf '\n[[registry]]\nprefix = "%s"\nlocation = "%s"\n\n[[registry.mirror]]\nlocation = "%s/%s"\ninsecure = true\npull-from-mirror = "%s"\n' \
        "$h" "$h" "$base" "$h" "$policy"
    done
  } >"$f"
}
