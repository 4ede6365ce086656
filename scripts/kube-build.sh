#!/usr/bin/env bash
# Build the real kube-apiserver and etcd the KServe tests run against, from Go modules,
# once per version; the binaries are cached outside the repository:
#   ${KFOPS_KUBE_CACHE:-~/.cache/kfops-tests/kube}/<k8s version>-etcd<etcd version>/
# Prints that folder. Rebuilds only when a binary is missing; an interrupted build leaves
# only *.partial files, never a half-written binary.
set -euo pipefail
k8s="${KFOPS_KUBE_VERSION:-v1.37.2}"
etcd="${KFOPS_ETCD_VERSION:-v3.6.16}"
cache="${KFOPS_KUBE_CACHE:-$HOME/.cache/kfops-tests/kube}"
out="$cache/$k8s-etcd$etcd"
if [ -x "$out/kube-apiserver" ] && [ -x "$out/etcd" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
# One build at a time (CI and a developer's run may start together); the second waits
# for the first and then finds the binaries.
exec 9>"$out/.lock"
flock 9
if [ -x "$out/kube-apiserver" ] && [ -x "$out/etcd" ]; then
  echo "$out"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "kube-build.sh: building kube-apiserver and etcd needs Go (https://go.dev/dl) and the Go module proxy" >&2
  exit 1
fi
work="$cache/src-$k8s-etcd$etcd"
mkdir -p "$work/apiserver" "$work/etcd"
export GOFLAGS=-mod=mod GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
started=$(date +%s)

if [ ! -x "$out/kube-apiserver" ]; then
  echo "==> building kube-apiserver $k8s from k8s.io/kubernetes (first time only, several minutes)" >&2
  cd "$work/apiserver"
  # k8s.io/kubernetes requires its staging modules at v0.0.0 (its own go.mod replaces them
  # with ./staging); a module that requires it must replace each with the published
  # version. The list comes from k8s.io/kubernetes's own go.mod.
  gomod=$(go mod download -json "k8s.io/kubernetes@$k8s" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  staging="v0.${k8s#v1.}"
  cat > go.mod <<MOD
module kfops.local/kube-apiserver

go $(awk '$1 == "go" {print $2; exit}' "$gomod")

require k8s.io/kubernetes $k8s
MOD
  awk '$2 == "v0.0.0" && $1 ~ /^k8s\.io\// {print $1}' "$gomod" | sort -u | while read -r mod; do
    echo "replace $mod => $mod $staging" >> go.mod
  done
  cat > main.go <<'GO'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
GO
  go mod tidy >&2
  # The version the release build stamps in (otherwise /version says v0.0.0-master).
  minor="${k8s#v1.}"
  minor="${minor%%.*}"
  v=k8s.io/component-base/version
  stamp="-X $v.gitVersion=$k8s -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
  CGO_ENABLED=0 go build -trimpath -ldflags="-s -w $stamp" -o "$out/kube-apiserver.partial" . >&2
  mv "$out/kube-apiserver.partial" "$out/kube-apiserver"
fi

if [ ! -x "$out/etcd" ]; then
  echo "==> building etcd $etcd from go.etcd.io/etcd/server/v3" >&2
  cd "$work/etcd"
  cat > go.mod <<MOD
module kfops.local/etcd

go 1.24

require go.etcd.io/etcd/server/v3 $etcd
MOD
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
GO
  go mod tidy >&2
  CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$out/etcd.partial" . >&2
  mv "$out/etcd.partial" "$out/etcd"
fi
echo "==> kube-apiserver and etcd built in $(( $(date +%s) - started )) s" >&2
echo "$out"
