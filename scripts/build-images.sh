#!/usr/bin/env bash
# Build the serve and train images with no registry but PyPI: an offline-made base image (debootstrap of
# Debian bookworm, whose python3 is 3.11, imported with podman) and a wheel directory built on the host,
# installed in the image with --no-index (the air-gapped path). Steps are cached between runs.
#
#   scripts/build-images.sh [base|wheels|images|all]     (default: all)
#   scripts/build-images.sh podman ARGS...               podman on the same image store (to run the images)
#
# Env: SUPPORTKIT_BUILD_CACHE (default ~/.cache/supportkit/container-build), TAG (default: dev),
#      IMAGES ("serve train"), DEBIAN_MIRROR (default: the first Debian URI in apt's sources),
#      SUPPORTKIT_STORAGE_DRIVER (overlay or vfs; default: overlay where a probe mount works, else vfs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${SUPPORTKIT_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/supportkit/container-build}
TAG=${TAG:-dev}
IMAGES=${IMAGES:-serve train}
BASE_IMAGE=localhost/supportkit-base:bookworm
TORCH_WHEEL_DIR=${TORCH_WHEEL_DIR:-/opt/wheels}
mkdir -p "$CACHE"
log() { echo "[build-images] $*" >&2; }

# A private image store in the cache (no locks shared with other podman users), runc and cgroupfs (no
# systemd here). Native overlay is much faster than vfs (which copies every layer) but not every kernel or
# sandbox allows it: probe once with a real mount and remember the answer.
storage_driver() {
  if [ -n "${SUPPORTKIT_STORAGE_DRIVER:-}" ]; then echo "$SUPPORTKIT_STORAGE_DRIVER"; return; fi
  if [ ! -s "$CACHE/storage-driver" ]; then
    local probe="$CACHE/probe" driver=vfs   # runroot paths must stay under 50 characters
    mkdir -p "$probe/rootfs"
    echo ok > "$probe/rootfs/ok"
    local P=(podman --root "$probe/root" --runroot /tmp/supportkit-run-probe --storage-driver overlay) ctr
    if tar -C "$probe/rootfs" -cf "$probe/probe.tar" . &&
       timeout 120 "${P[@]}" import "$probe/probe.tar" localhost/probe:1 >/dev/null 2>&1 &&
       ctr=$(timeout 120 "${P[@]}" create localhost/probe:1 /ok 2>/dev/null) &&
       timeout 120 "${P[@]}" mount "$ctr" >/dev/null 2>&1; then
      driver=overlay
    fi
    "${P[@]}" system reset -f >/dev/null 2>&1 || true
    rm -rf "$probe"
    echo "$driver" > "$CACHE/storage-driver"
  fi
  cat "$CACHE/storage-driver"
}
DRIVER=$(storage_driver)
STORE=(--root "$CACHE/storage-$DRIVER" --runroot "/tmp/supportkit-run-$DRIVER" --storage-driver "$DRIVER")
PODMAN=(podman "${STORE[@]}" --runtime runc --cgroup-manager cgroupfs)
BUILDAH=(buildah "${STORE[@]}")

debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
        grep -v security | grep -oE '(https?|file):[^ ]*/debian/?' | head -1)
  echo "${uri:?no Debian mirror found in apt sources; set DEBIAN_MIRROR}"
}

# A minimal bookworm with python3 + venv, as a local image. Rebuilt only when the package list changes.
build_base() {
  local pkgs=python3,python3-venv,ca-certificates,tzdata
  local stamp="$CACHE/base.stamp"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$pkgs" ] && "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
    log "base image $BASE_IMAGE is cached"; return
  fi
  local tarball="$CACHE/bookworm-python3.tar"
  if [ "$(cat "$tarball.stamp" 2>/dev/null)" != "$pkgs" ]; then
    local rootfs="$CACHE/rootfs"
    rm -rf "$rootfs"
    log "debootstrap bookworm ($pkgs) from $(debian_mirror)"
    debootstrap --variant=minbase --include="$pkgs" bookworm "$rootfs" "$(debian_mirror)" >"$CACHE/debootstrap.log" 2>&1 ||
      { tail -20 "$CACHE/debootstrap.log"; exit 1; }
    # Slim it: package caches, docs and man pages are not needed at run time.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
           "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*
    tar --numeric-owner -C "$rootfs" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"; echo "$pkgs" > "$tarball.stamp"; rm -rf "$rootfs"
  fi
  "${PODMAN[@]}" import --change 'CMD ["/usr/bin/python3"]' "$tarball" "$BASE_IMAGE" >"$CACHE/import.log" 2>&1 ||
    { cat "$CACHE/import.log"; exit 1; }
  echo "$pkgs" > "$stamp"
  log "base image $BASE_IMAGE imported"
}

# Every wheel both images need, torch first from the local CPU build, sdists built into wheels here.
# Kept in the cache (keyed by pyproject.toml) and linked into .whl/, the git-ignored build-context copy.
build_wheels() {
  local dir="$CACHE/wheels" key
  key=$(sha256sum pyproject.toml | cut -c1-16)
  if [ "$(cat "$dir/.key" 2>/dev/null)" = "$key" ]; then
    log "wheels for pyproject $key are cached"
  else
    mkdir -p "$dir"
    local torch
    torch=$(ls "$TORCH_WHEEL_DIR"/torch-2.13.0+cpu-cp311-*.whl 2>/dev/null | head -1 || true)
    [ -n "$torch" ] && cp -n "$torch" "$dir/"
    log "collecting wheels into $dir"
    # The host's Python must be 3.11 like the image's so that the wheels fit.
    python3 -m pip wheel -q --wheel-dir "$dir" --find-links "$dir" \
      torch==2.13.0 ".[serve,train,eval]" pip setuptools wheel >"$CACHE/wheels.log" 2>&1 ||
      { grep -v '^WARNING: Location' "$CACHE/wheels.log" | tail -20; exit 1; }
    rm -f "$dir"/supportkit-*.whl   # the image builds the kit from its sources
    echo "$key" > "$dir/.key"
  fi
  rm -rf "$ROOT/.whl"
  cp -al "$dir" "$ROOT/.whl" 2>/dev/null || cp -a "$dir" "$ROOT/.whl"
}

build_images() {
  local img target common
  common=(--layers --format docker --isolation chroot --runtime runc
          --ulimit nofile=1024:1024 --ulimit nproc=4096:4096
          --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg PIP_ARGS="--no-index --find-links /wheels")
  for img in $IMAGES; do
    log "building supportkit-$img:$TAG"
    # The deps stage gets a tag of its own, so that pruning below keeps its layer cache (torch and the
    # dependencies take minutes to install; the kit's own layer takes seconds).
    for target in deps final; do
      local args=("${common[@]}" -f "Dockerfile.$img")
      if [ "$target" = deps ]; then
        args+=(--target deps -t "localhost/supportkit-$img-deps:$TAG")
      else
        args+=(--build-arg VERSION="$(sed -nE 's/^version = "(.*)"/\1/p' pyproject.toml)"
               --build-arg REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
               -t "localhost/supportkit-$img:$TAG")
      fi
      "${BUILDAH[@]}" build "${args[@]}" . >"$CACHE/build-$img-$target.log" 2>&1 ||
        { tail -30 "$CACHE/build-$img-$target.log"; exit 1; }
    done
  done
  # Superseded builds leave untagged images behind (GBs each): drop them.
  "${PODMAN[@]}" image prune -f >"$CACHE/prune.log" 2>&1 || log "image prune failed: see $CACHE/prune.log"
}

case "${1:-all}" in
  base) build_base ;;
  wheels) build_wheels ;;
  images) build_images ;;
  all) build_base; build_wheels; build_images ;;
  podman) shift; exec "${PODMAN[@]}" "$@" ;;
  *) echo "usage: $0 [base|wheels|images|all|podman ARGS...]" >&2; exit 2 ;;
esac
