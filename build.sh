#!/usr/bin/env bash
# Builds Watercolor's two Docker images, wtc-api and wtc-process.
#
# How: pip on this machine puts every wheel the images need into a wheelhouse
# (.build/wheelhouse/, kept between runs), chosen for the base image's Python
# and platform; then `docker build` installs from those wheels only, so the
# image builds themselves never reach the network. ./build.sh -h lists the
# options.
set -euo pipefail
# shellcheck source=.script_utils
. "$(dirname "$0")/.script_utils"
cd "$WTC_ROOT"

usage() {
  cat <<'EOF'
Usage: ./build.sh [-n] [-b IMAGE | -L] [-c FILE] [-w DIR] [-g] [-h]

Builds the Docker images wtc-api (the HTTP API) and wtc-process (the
processing backend, models included) in the Docker engine that `docker`
talks to (DOCKER_HOST and friends are honoured, so after
`eval "$(minikube docker-env)"` the images land in minikube).

Options:
  -n        Build without Docker's cache. Sometimes necessary after changing a
            Dockerfile or the files copied into an image; if in doubt, give it.
  -b IMAGE  Base image for both images (default: $WTC_BASE_IMAGE, else
            python:3.11-slim). It must provide python3 (3.11) with the venv
            module on glibc Linux: the official Python images and Debian
            bookworm do.
  -L        Make (once) and use a local Debian bookworm base image,
            wtc-base:bookworm, with debootstrap: for machines that cannot pull
            from a registry. Needs root and debootstrap; the Debian mirror is
            $WTC_DEBIAN_MIRROR, else the one apt uses here. The root file
            system is kept in .build/base/ and re-imported when the image is
            gone.
  -c FILE   CA bundle (PEM) that pip trusts when it fetches wheels: for
            networks behind a TLS-intercepting proxy (default:
            $WTC_CA_BUNDLE, else pip's own configuration).
  -w DIR    Build offline from the wheels in DIR, a wheelhouse made earlier
            (for example by a previous run, in .build/wheelhouse/): no package
            index is contacted (default: $WTC_WHEELHOUSE). DIR must hold every
            wheel both images need, plus setuptools for building Watercolor's
            own wheel.
  -g        Add the Vulkan loader to wtc-process so that WTC_DEVICE=vulkan can
            use a GPU (needs a Debian mirror during the build; see
            docs/deploy.md). Default: $WTC_VULKAN, else off.
  -h        Show this help.

Other variables:
  PYTHON        Interpreter whose pip fills the wheelhouse (default: python3
                if it has pip, else the project's .venv). Its pip settings
                (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_CERT, pip.conf, ...)
                choose the package index.
  WTC_DOCKER    Docker client to use (default: docker). A client without the
                buildx plugin is run with DOCKER_BUILDKIT=0 (classic builder).
EOF
}

NO_CACHE=0
BASE_IMAGE=${WTC_BASE_IMAGE:-python:3.11-slim}
LOCAL_BASE=0
LOCAL_BASE_IMAGE=wtc-base:bookworm
CA_BUNDLE=${WTC_CA_BUNDLE:-}
WHEELHOUSE=${WTC_WHEELHOUSE:-}
VULKAN=${WTC_VULKAN:-0}

while getopts ":nb:Lc:w:gh" opt; do
  case $opt in
    n) NO_CACHE=1 ;;
    b) BASE_IMAGE=$OPTARG ;;
    L) LOCAL_BASE=1 ;;
    c) CA_BUNDLE=$OPTARG ;;
    w) WHEELHOUSE=$OPTARG ;;
    g) VULKAN=1 ;;
    h) usage; exit 0 ;;
    :) die "option -$OPTARG needs a value (see ./build.sh -h)." ;;
    *) die "unknown option -$OPTARG (see ./build.sh -h)." ;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || die "unexpected argument '$1' (see ./build.sh -h)."
case $VULKAN in 0 | 1) ;; *) die "WTC_VULKAN must be 0 or 1, not '$VULKAN'." ;; esac

if [ -n "$CA_BUNDLE" ]; then
  [ -r "$CA_BUNDLE" ] || die "the CA bundle '$CA_BUNDLE' cannot be read."
  PIP_CERT=$(cd "$(dirname "$CA_BUNDLE")" && pwd)/$(basename "$CA_BUNDLE")
  export PIP_CERT
fi
OFFLINE=0
if [ -n "$WHEELHOUSE" ]; then
  [ -d "$WHEELHOUSE" ] || die "the wheelhouse '$WHEELHOUSE' is not a folder."
  WHEELHOUSE=$(cd "$WHEELHOUSE" && pwd)
  OFFLINE=1
fi

docker_setup
require_docker_engine
python_setup

# One build at a time in this tree: a second one waits instead of rewriting
# the wheels the first is sending to Docker.
mkdir -p .build
if have flock; then
  exec 9>.build/build.lock
  flock --nonblock 9 || {
    info "another ./build.sh is running in this tree; waiting for it"
    flock 9
  }
fi

# The first Debian archive mirror apt is configured with here.
debian_mirror() {
  local uri
  uri=$(
    {
      cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*//p'
      cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p'
    } | tr ' ' '\n' | grep -E '^https?://.*/debian/?$' | head -n 1
  ) || true
  echo "${uri:-http://deb.debian.org/debian}"
}

make_local_base() {
  if "$DOCKER" image inspect "$LOCAL_BASE_IMAGE" >/dev/null 2>&1; then
    info "local base image $LOCAL_BASE_IMAGE is already there"
    return
  fi
  local dir=.build/base
  local tarball=$dir/bookworm-rootfs.tar
  if [ ! -s "$tarball" ]; then
    [ "$(id -u)" = 0 ] || die "making a base image with debootstrap needs root: run 'sudo ./build.sh -L' once."
    require_cmd debootstrap "install it (Debian and Ubuntu: apt-get install debootstrap)."
    local mirror=${WTC_DEBIAN_MIRROR:-$(debian_mirror)}
    info "making a Debian bookworm root file system with debootstrap from $mirror"
    rm -rf "$dir/rootfs"
    mkdir -p "$dir"
    run debootstrap --variant=minbase --include=python3,python3-venv bookworm "$dir/rootfs" "$mirror" \
      >"$dir/debootstrap.log" 2>&1 || die "debootstrap failed: see $dir/debootstrap.log."
    # What an image does not need: package caches and lists, documentation.
    rm -rf "$dir"/rootfs/var/cache/apt/archives/*.deb "$dir"/rootfs/var/lib/apt/lists/* \
      "$dir"/rootfs/usr/share/doc/* "$dir"/rootfs/usr/share/man/* "$dir"/rootfs/usr/share/locale/* \
      "$dir"/rootfs/var/log/*.log
    run tar -C "$dir/rootfs" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    rm -rf "$dir/rootfs"
  fi
  info "importing $tarball as $LOCAL_BASE_IMAGE"
  run "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$tarball" "$LOCAL_BASE_IMAGE" >/dev/null
}

if [ "$LOCAL_BASE" = 1 ]; then
  make_local_base
  BASE_IMAGE=$LOCAL_BASE_IMAGE
fi

if ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  info "pulling the base image $BASE_IMAGE"
  run "$DOCKER" pull "$BASE_IMAGE" >/dev/null ||
    die "the base image $BASE_IMAGE cannot be pulled: check the registry, or use -L to make a local Debian base (no registry needed) or -b for another image."
fi

# Which wheels fit the base image: ask its own Python.
info "asking base image $BASE_IMAGE for its Python and platform"
probe=$("$DOCKER" run --rm --entrypoint python3 "$BASE_IMAGE" -c \
  'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.machine(), platform.libc_ver()[1])') ||
  die "the base image $BASE_IMAGE cannot run python3: choose another with -b."
read -r PY_VERSION ARCH GLIBC <<<"$probe"
[ -n "${GLIBC:-}" ] || die "the base image $BASE_IMAGE is not glibc Linux; the wheels need glibc: choose another with -b."
[ "$PY_VERSION" = 3.11 ] || warn "the base image has Python $PY_VERSION; Watercolor is tested with 3.11."
info "base image: Python $PY_VERSION, $ARCH, glibc $GLIBC"

# manylinux tags this glibc accepts, newest first (pip wants them listed).
PLATFORMS=()
glibc_minor=${GLIBC#*.}
for ((minor = glibc_minor; minor >= 5; minor--)); do
  PLATFORMS+=(--platform "manylinux_2_${minor}_${ARCH}")
done
PLATFORMS+=(--platform "manylinux2014_${ARCH}" --platform "manylinux2010_${ARCH}" --platform "manylinux1_${ARCH}")
TARGET=(--only-binary=:all: --python-version "$PY_VERSION" --implementation cp "${PLATFORMS[@]}")

if [ "$OFFLINE" = 0 ]; then
  WHEELHOUSE=$WTC_ROOT/.build/wheelhouse/cp${PY_VERSION/./}-${ARCH}-glibc${GLIBC}
fi
INDEX=()
[ "$OFFLINE" = 1 ] && INDEX=(--no-index)
mkdir -p "$WHEELHOUSE"

info "building Watercolor's own wheel"
rm -rf .build/wheels
mkdir -p .build/wheels/self
run "$PYTHON" -m pip wheel --quiet --no-deps "${INDEX[@]}" --find-links "$WHEELHOUSE" \
  --wheel-dir .build/wheels/self . || die "building Watercolor's wheel failed (see above)."
SELF_WHEEL=$(ls .build/wheels/self/watercolor-*.whl)
VERSION=$(basename "$SELF_WHEEL" | cut -d- -f2)

if [ "$OFFLINE" = 0 ]; then
  info "filling the wheelhouse $WHEELHOUSE"
  # setuptools too, so that the wheelhouse can later build Watercolor offline (-w).
  build_requires=$("$PYTHON" -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' 2>/dev/null) || build_requires=
  # shellcheck disable=SC2086 # build_requires is a list of requirement words
  run "$PYTHON" -m pip download --quiet --dest "$WHEELHOUSE" --find-links "$WHEELHOUSE" "${TARGET[@]}" \
    "${SELF_WHEEL}[api,process]" $build_requires ||
    die "pip could not fetch the wheels (see above): check the network, or use -c for a proxy's CA bundle or -w for a local wheelhouse."
else
  info "building offline from the wheelhouse $WHEELHOUSE"
fi

# Each image gets exactly the wheels its extra needs.
for part in api process; do
  info "collecting the wheels of wtc-$part"
  run "$PYTHON" -m pip download --quiet --no-index --find-links "$WHEELHOUSE" --dest ".build/wheels/$part" \
    "${TARGET[@]}" "${SELF_WHEEL}[$part]" ||
    die "the wheelhouse $WHEELHOUSE lacks wheels that wtc-$part needs (see above)."
  # Watercolor's own wheel goes in a later layer than its dependencies.
  rm -f .build/wheels/"$part"/watercolor-*.whl
done

build_image() {
  local name=$1 dockerfile=$2
  shift 2
  local args=(build --file "$dockerfile" --tag "$name" --build-arg "BASE_IMAGE=$BASE_IMAGE"
    --build-arg "VERSION=$VERSION" "$@")
  [ "$NO_CACHE" = 1 ] && args+=(--no-cache)
  info "building $name from $dockerfile on $BASE_IMAGE"
  local started=$SECONDS
  run "$DOCKER" "${args[@]}" . || die "building $name failed (see above)."
  info "built $name in $((SECONDS - started)) s"
}

build_image wtc-api api/Dockerfile
build_image wtc-process processing/Dockerfile --build-arg "VULKAN=$VULKAN"

info "done:"
"$DOCKER" image ls --format '    {{.Repository}}:{{.Tag}}  {{.Size}}' wtc-api >&2
"$DOCKER" image ls --format '    {{.Repository}}:{{.Tag}}  {{.Size}}' wtc-process >&2
