# shellcheck shell=bash
# Shared shell helpers for test/critest.sh and test/demo.sh: a real docker-registry, a real
# containerd with its own config/root/state/socket, synthetic images pushed with crane, and the
# proxy. Everything listens on 127.0.0.1 only; every process started here is recorded by pid and
# stopped by pid in cmp_down; every wait is bounded.
#
#   source test/lib.sh
#   cmp_init                       # CMP_DIR=/tmp/cmp.XXXXXX, PATH += test/.bin (runs tools.sh)
#   cmp_registry_start reg PORT    # docker-registry on 127.0.0.1:PORT, data under $CMP_DIR/reg
#   cmp_containerd_start           # socket $CMP_CTD_SOCK; public registries -> a closed port
#   cmp_push REF CONTENT [USER]    # one-layer linux image whose layer holds CONTENT
#   cmp_proxy_start CONF           # socket $CMP_PROXY_SOCK, metrics on $CMP_METRICS_ADDR
#   cmp_down                       # stop everything by pid (reverse order), remove $CMP_DIR

CMP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
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

# cmp_free_port: print a port on 127.0.0.1 that nothing listens on (at most 100 tries).
cmp_free_port() {
  local i p
  for ((i = 0; i < 100; i++)); do
    p=$((20000 + RANDOM % 20000))
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
  export CMP_DIR CMP_CLOSED_PORT
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
  mkdir -p "$d/data"
  cat >"$d/config.yml" <<YAML
version: 0.1
log:
  level: ${CMP_REGISTRY_LOG_LEVEL:-warn}
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $d/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YAML
  cmp_start "$name" docker-registry serve "$d/config.yml"
  cmp_wait 20 "registry $name on 127.0.0.1:$port" curl -fsS "http://127.0.0.1:$port/v2/" \
    || { cmp_dump_logs 60; cmp_die "registry $name did not start"; }
}

# cmp_hosts_toml HOST URL: containerd resolves HOST (a registry host[:port]) at URL (http://...).
# With a third argument (a path such as /v2/mirror/gcr.io) the host is a mirror at that path.
cmp_hosts_toml() {
  local url=$2 path=${3:-} d=$CMP_DIR/ctd/certs.d/$1
  mkdir -p "$d"
  if [[ -z $path ]]; then
    printf 'server = "%s"\n\n[host."%s"]\n  capabilities = ["pull", "resolve"]\n' "$url" "$url" >"$d/hosts.toml"
  else
    # A mirror under a path: containerd would otherwise append /v2 itself.
    printf 'server = "http://127.0.0.1:%s"\n\n[host."%s%s"]\n  capabilities = ["pull", "resolve"]\n  override_path = true\n' \
      "$CMP_CLOSED_PORT" "$url" "$path" >"$d/hosts.toml"
  fi
}

# cmp_containerd_start: containerd with its own root/state/socket. Every public registry host
# is pointed at a closed loopback port, so nothing leaves the machine and a pull from a source
# fails at once (connection refused). Hosts already configured (cmp_hosts_toml) are kept.
cmp_containerd_start() {
  local d=$CMP_DIR/ctd h
  mkdir -p "$d/root" "$d/state" "$d/certs.d"
  for h in "${CMP_PUBLIC_HOSTS[@]}"; do
    [[ -f $d/certs.d/$h/hosts.toml ]] || cmp_hosts_toml "$h" "http://127.0.0.1:$CMP_CLOSED_PORT"
  done
  CMP_CTD_SOCK=$d/containerd.sock
  cat >"$d/config.toml" <<TOML
version = 2
root = "$d/root"
state = "$d/state"

[grpc]
  address = "$CMP_CTD_SOCK"

[plugins."io.containerd.grpc.v1.cri"]
  disable_cgroup = true
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$d/certs.d"
TOML
  cmp_start containerd containerd --config "$d/config.toml"
  cmp_wait 30 "containerd socket $CMP_CTD_SOCK" \
    crictl --runtime-endpoint "unix://$CMP_CTD_SOCK" --image-endpoint "unix://$CMP_CTD_SOCK" --timeout 2s version \
    || { cmp_dump_logs 60; cmp_die "containerd did not start"; }
  export CMP_CTD_SOCK
}

# cmp_push REF CONTENT [USER]: push a one-layer linux/<host arch> image (layer: /content.txt with
# CONTENT), optionally with Config.User set, over plain HTTP.
cmp_push() {
  local ref=$1 content=$2 user=${3:-} t arch
  arch=$(go env GOARCH)
  t=$(mktemp -d "$CMP_DIR/push.XXXXXX")
  mkdir -p "$t/layer"
  printf '%s\n' "$content" >"$t/layer/content.txt"
  tar -C "$t/layer" -cf "$t/layer.tar" .
  if ! crane append --insecure -f "$t/layer.tar" -t "$ref" >"$t/out" 2>&1 \
    || ! crane mutate --insecure --set-platform "linux/$arch" ${user:+--user "$user"} -t "$ref" "$ref" >>"$t/out" 2>&1; then
    cat "$t/out" >&2
    rm -rf "$t"
    cmp_die "push $ref failed"
  fi
  rm -rf "$t"
}

# cmp_push_critest_images MIRROR: the images critest's image tests name, pushed under
# MIRROR/<source host>/<path>, e.g. gcr.io/k8s-staging-cri-tools/test-image-tag:test ->
# MIRROR/gcr.io/k8s-staging-cri-tools/test-image-tag:test. The digest-pinned image is not
# pushed: its content (and so its digest) cannot be recreated offline.
cmp_push_critest_images() {
  local m=$1 g=gcr.io/k8s-staging-cri-tools i
  cmp_push "$m/$g/test-image-latest:latest" latest
  cmp_push "$m/$g/test-image-tag:test" tag-test
  cmp_push "$m/$g/test-image-tag:all" tag-all
  for i in 1 2 3; do cmp_push "$m/$g/test-image-$i:latest" "image-$i"; done
  cmp_push "$m/$g/test-image-tags:1" tags
  for i in 2 3; do
    crane tag --insecure "$m/$g/test-image-tags:1" "$i" >/dev/null 2>&1 || cmp_die "crane tag test-image-tags:$i failed"
  done
  cmp_push "$m/$g/test-image-user-uid:latest" uid 1002
  cmp_push "$m/$g/test-image-user-username:latest" username www-data
  cmp_push "$m/$g/test-image-user-uid-group:latest" uid-group 1003:users
  cmp_push "$m/$g/test-image-user-username-group:latest" username-group www-data:users
  cmp_push "$m/registry.k8s.io/pause:3.9" pause
  # The same image (same digest) in a second registry: critest removes it by one name and
  # expects both names gone.
  crane copy --insecure "$m/registry.k8s.io/pause:3.9" "$m/k8s.gcr.io/pause:3.9" >/dev/null 2>&1 \
    || cmp_die "crane copy pause:3.9 failed"
}

# cmp_build_proxy: CMP_PROXY_BIN = $CRI_MIRROR_PROXY_BIN when set, else bin/cri-mirror-proxy built
# by `make build` (version-stamped) or, without a Makefile, by go build.
cmp_build_proxy() {
  if [[ -n ${CRI_MIRROR_PROXY_BIN:-} ]]; then
    CMP_PROXY_BIN=$CRI_MIRROR_PROXY_BIN
  else
    CMP_PROXY_BIN=$CMP_ROOT/bin/cri-mirror-proxy
    if grep -q '^build:' "$CMP_ROOT/Makefile" 2>/dev/null; then
      cmp_log "make build"
      make -C "$CMP_ROOT" --no-print-directory build >&2 || cmp_die "make build failed"
    else
      cmp_log "go build -o bin/cri-mirror-proxy ./cmd/cri-mirror-proxy"
      (cd "$CMP_ROOT" && CGO_ENABLED=0 go build -tags containers_image_openpgp -o bin/cri-mirror-proxy ./cmd/cri-mirror-proxy) \
        || cmp_die "building cri-mirror-proxy failed"
    fi
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
