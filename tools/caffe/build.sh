#!/usr/bin/env bash
# Fetch, patch, build and cache BVLC Caffe (Debian 11's source package) for pytrim, then
# make `import caffe` and Caffe's command-line tools work in a virtual environment.
#
#   tools/caffe/build.sh --python .venv/bin/python [--venv .venv] [--cuda] [--cuda-arch "90"]
#
# The source is the Debian 11 (bullseye) package caffe 1.0.0+git20180821.99bd997-8, fetched
# with apt through a private sources list and state directory (the system's apt configuration
# is never edited), checked against pinned checksums, unpacked with Debian's patches, then
# patched with tools/caffe/patches/*.patch. Builds live in a cache outside the repository,
# keyed by source version + patches + options + interpreter; a finished build is reused.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VERSION="1.0.0+git20180821.99bd997-8"
# Bump when a change to this script changes what is built (it is part of the cache key;
# the script itself is not, so that edits to messages or comments reuse finished builds).
RECIPE=1
DSC="caffe_${VERSION}.dsc"
# SHA-256 of the .dsc as published in bullseye/main; the .dsc in turn pins the tarballs
# (dpkg-source checks them when it unpacks).
DSC_SHA256="c492f4893fc1ba1fb514b2d9b4763bc78dc93571ea24adc6e604eccbb93cdd64"
ORIG_SHA256="e0eb3f06794f7402c77b7dec8e8480273ee1a1bb192e9122b621a69d4147ad0c"
DEBIAN_SHA256="07cf073227494a6b07234e40cb5df91db566616593eef9baafdc4d06ad159f21"

CACHE_ROOT="${PYTRIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pytrim}"
PYTHON=""
VENV=""
CUDA="${CUDA:-0}"
CUDA_ARCH="${CUDA_ARCH:-90}"
JOBS="${JOBS:-$(nproc)}"
OPENCV="${OPENCV:-auto}"

# Debian 12 packages the build needs (OpenCV is optional: used when present).
APT_DEPS=(cmake dpkg-dev patch g++ make pkg-config libboost-dev libboost-filesystem-dev
  libboost-system-dev libboost-thread-dev libboost-python-dev libgflags-dev
  libgoogle-glog-dev libhdf5-dev liblmdb-dev libopenblas-dev libprotobuf-dev
  libprotoc-dev protobuf-compiler)
APT_OPTIONAL=(libopencv-dev)

usage() {
  sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  cat <<EOF

Options:
  --python PATH      interpreter pycaffe is built for (its numpy must be installed)
  --venv DIR         virtual environment to expose caffe in (.pth file + tool wrappers)
  --cuda             build with CUDA (cuDNN off); default is CPU_ONLY
  --cuda-arch "A B"  real GPU architectures for nvcc (default: ${CUDA_ARCH}; e.g. "80 90")
  --no-opencv        build without OpenCV even if it is installed
  --deps-only        install the Debian build dependencies (and, for Debian's own python3,
                     python3-venv and python3-dev) and stop
  --cpp-tests        also build Caffe's C++ test binary (bin/caffe-cpp-tests) into the
                     finished build (used by `make test`; `make caffe` does not need it)
  --print-prefix     print the install prefix of the matching finished build and stop
  -h, --help         this text
Environment: PYTRIM_CACHE (cache root, default \$XDG_CACHE_HOME/pytrim), JOBS (parallel jobs),
  PYTRIM_DEBIAN_MIRROR (Debian mirror URI; default: the one the system's apt sources use).
EOF
}

die() { echo "build-caffe: error: $*" >&2; exit 1; }
say() { echo "build-caffe: $*" >&2; }

DEPS_ONLY=0
PRINT_PREFIX=0
CPP_TESTS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --python) PYTHON="$2"; shift 2 ;;
    --venv) VENV="$2"; shift 2 ;;
    --cuda) CUDA=1; shift ;;
    --cuda-arch) CUDA_ARCH="$2"; shift 2 ;;
    --no-opencv) OPENCV=0; shift ;;
    --deps-only) DEPS_ONLY=1; shift ;;
    --cpp-tests) CPP_TESTS=1; shift ;;
    --print-prefix) PRINT_PREFIX=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

# --- Debian build dependencies -------------------------------------------------------------
missing_pkgs() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

# Debian's own interpreter lacks `-m venv` and the headers/libpython pycaffe builds against
# until python3-venv and python3-dev are installed (pyenv's or a venv's python has both).
python_pkgs() {
  local py="${PYTHON:-python3}" real
  real=$(readlink -f "$(command -v "$py" 2>/dev/null || echo "$py")" 2>/dev/null) || return 0
  case "$real" in
    /usr/bin/python3*) echo "python3-venv python3-dev" ;;
  esac
}

install_deps() {
  local want=("${APT_DEPS[@]}")
  [ "$OPENCV" = 0 ] || want+=("${APT_OPTIONAL[@]}")
  # shellcheck disable=SC2207
  want+=($(python_pkgs))
  local missing
  missing=$(missing_pkgs "${want[@]}" | tr '\n' ' ')
  [ -z "${missing// /}" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    die "missing Debian packages: ${missing}
  install them with: sudo apt-get install --no-install-recommends ${missing}"
  fi
  say "installing Debian packages: ${missing}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

install_deps
[ "$DEPS_ONLY" = 1 ] && exit 0

[ -n "$PYTHON" ] || die "--python is required (the interpreter pycaffe is built for)"
[ -x "$PYTHON" ] || die "no interpreter at $PYTHON"
# Absolute paths (CMake runs in the build folder); keep the venv's own bin/python link.
PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"
[ -z "$VENV" ] || VENV="$(cd "$VENV" && pwd)"
PYINFO=$("$PYTHON" - <<'EOF'
import sys, sysconfig
import numpy
ver = "%d.%d" % sys.version_info[:2]
libdir = sysconfig.get_config_var("LIBDIR") or ""
ldlib = sysconfig.get_config_var("LDLIBRARY") or ""
print(ver)
print(sysconfig.get_paths()["include"])
print(libdir + "/" + ldlib)
print(numpy.__version__)
print(sys.executable)
EOF
) || die "$PYTHON cannot import numpy: install the requirements first (make venv)"
PY_VER=$(sed -n 1p <<<"$PYINFO")
PY_INC=$(sed -n 2p <<<"$PYINFO")
PY_LIB=$(sed -n 3p <<<"$PYINFO")
NUMPY_VER=$(sed -n 4p <<<"$PYINFO")
[ -f "$PY_LIB" ] || die "libpython not found at $PY_LIB (an interpreter built with --enable-shared is needed)"

if [ "$OPENCV" = auto ]; then
  if pkg-config --exists opencv4 2>/dev/null; then OPENCV=1; else OPENCV=0; fi
fi

# --- cache key ------------------------------------------------------------------------------
CUDA_REQS="$HERE/cuda-requirements.txt"
key_material() {
  echo "version=$VERSION recipe=$RECIPE cuda=$CUDA arch=$CUDA_ARCH opencv=$OPENCV"
  echo "python=$PY_VER lib=$PY_LIB numpy=$NUMPY_VER"
  cat "$HERE"/patches/*.patch
  [ "$CUDA" = 1 ] && cat "$CUDA_REQS"
  true
}
KEY=$(key_material | sha256sum | cut -c1-16)
VARIANT=$([ "$CUDA" = 1 ] && echo "cuda" || echo "cpu")
BUILD_ROOT="$CACHE_ROOT/caffe/${VARIANT}-${KEY}"
PREFIX="$BUILD_ROOT/install"

if [ "$PRINT_PREFIX" = 1 ]; then
  [ -f "$BUILD_ROOT/.done" ] || die "no finished build for these options (run make caffe)"
  echo "$PREFIX"; exit 0
fi

link_venv() {
  [ -n "$VENV" ] || return 0
  local site
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$PREFIX/lib/python3/dist-packages" > "$site/pytrim-caffe.pth"
  # Wrappers, not symlinks: the caffe binary's embedded Python (Python layers) does not see
  # a venv, so it gets the venv's site-packages and pycaffe through PYTHONPATH.
  local tool
  for tool in caffe upgrade_net_proto_text upgrade_net_proto_binary convert_imageset \
              compute_image_mean upgrade_solver_proto_text extract_features; do
    [ -x "$PREFIX/bin/$tool" ] || continue
    cat > "$VENV/bin/$tool" <<EOF
#!/bin/sh
# Written by tools/caffe/build.sh: Caffe's $tool from $PREFIX
PYTHONPATH="$PREFIX/lib/python3/dist-packages:$site\${PYTHONPATH:+:\$PYTHONPATH}" exec "$PREFIX/bin/$tool" "\$@"
EOF
    chmod +x "$VENV/bin/$tool"
  done
  echo "$BUILD_ROOT" > "$VENV/caffe-build"
  say "caffe exposed in $VENV ($VARIANT build $KEY)"
}

# Caffe's C++ test binary, built in the finished build's own folder (its objects are reused).
build_cpp_tests() {
  [ -x "$PREFIX/bin/caffe-cpp-tests" ] && return 0
  local start; start=$(date +%s)
  say "building Caffe's C++ test binary with $JOBS jobs (log: $BUILD_ROOT/build/make-tests.log)"
  (cd "$BUILD_ROOT/build" && make -j"$JOBS" test.testbin > make-tests.log 2>&1) \
    || { tail -n 20 "$BUILD_ROOT/build/make-tests.log" >&2; die "C++ test build failed"; }
  cp "$BUILD_ROOT/build/test/test.testbin" "$PREFIX/bin/caffe-cpp-tests"
  echo "cpp_tests_seconds=$(( $(date +%s) - start ))" >> "$BUILD_ROOT/build-info.txt"
}

if [ -f "$BUILD_ROOT/.done" ]; then
  say "reusing finished build $BUILD_ROOT"
  [ "$CPP_TESTS" = 1 ] && build_cpp_tests
  link_venv
  echo "$PREFIX"
  exit 0
fi

mkdir -p "$CACHE_ROOT/caffe"
exec 9>"$CACHE_ROOT/caffe/.lock"
flock 9
if [ -f "$BUILD_ROOT/.done" ]; then   # another process finished it while we waited
  [ "$CPP_TESTS" = 1 ] && build_cpp_tests
  link_venv; echo "$PREFIX"; exit 0
fi
START=$(date +%s)

# --- fetch the source package through apt with a private sources list --------------------
source "$HERE/mirror.sh"   # debian_mirror

SRC_CACHE="$CACHE_ROOT/caffe/source"
fetch_source() {
  mkdir -p "$SRC_CACHE"
  if [ -f "$SRC_CACHE/$DSC" ] && [ -f "$SRC_CACHE/.verified" ]; then return 0; fi
  local mirror aptdir
  mirror=$(debian_mirror)
  aptdir="$CACHE_ROOT/caffe/apt"
  rm -rf "$aptdir"; mkdir -p "$aptdir/lists/partial"
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  local signed=""
  [ -f "$keyring" ] && signed="[signed-by=$keyring] "
  echo "deb-src ${signed}${mirror} bullseye main" > "$aptdir/sources.list"
  local aptopts=(-o "Dir::Etc::SourceList=$aptdir/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
                 -o "Dir::State::Lists=$aptdir/lists" -o "APT::Sandbox::User=root")
  say "fetching Debian source package caffe $VERSION from $mirror (bullseye main)"
  apt-get "${aptopts[@]}" -qq update || die "apt-get update on the private bullseye deb-src list failed"
  (cd "$SRC_CACHE" && apt-get "${aptopts[@]}" -qq source --download-only "caffe=$VERSION") \
    || die "apt-get source caffe=$VERSION failed"
  echo "$ORIG_SHA256  $SRC_CACHE/caffe_1.0.0+git20180821.99bd997.orig.tar.gz" | sha256sum -c --quiet \
    || die "checksum mismatch: orig tarball"
  echo "$DEBIAN_SHA256  $SRC_CACHE/caffe_${VERSION}.debian.tar.xz" | sha256sum -c --quiet \
    || die "checksum mismatch: debian tarball"
  echo "$DSC_SHA256  $SRC_CACHE/$DSC" | sha256sum -c --quiet || die "checksum mismatch: $DSC"
  touch "$SRC_CACHE/.verified"
}
fetch_source

# --- unpack with Debian's patches, then pytrim's ----------------------------------------------
rm -rf "$BUILD_ROOT"
mkdir -p "$BUILD_ROOT"
say "unpacking (Debian patches applied by dpkg-source)"
# (The uploader's key is not on the machine; the pinned checksums above are the check.)
dpkg-source -x "$SRC_CACHE/$DSC" "$BUILD_ROOT/src" >/dev/null 2>&1 \
  || die "dpkg-source could not unpack $DSC"
for p in "$HERE"/patches/*.patch; do
  say "applying $(basename "$p"): $(sed -n 's/^Reason: //p' "$p" | head -n1)"
  patch -d "$BUILD_ROOT/src" -p1 --forward --quiet < "$p" || die "patch $(basename "$p") failed"
done

# --- configure ---------------------------------------------------------------------------------
CMAKE_ARGS=(
  -DCMAKE_BUILD_TYPE=Release
  -DCMAKE_INSTALL_PREFIX="$PREFIX"
  -DCMAKE_INSTALL_RPATH="$PREFIX/lib"
  -DCMAKE_INSTALL_RPATH_USE_LINK_PATH=ON
  -DBLAS=Open
  -DUSE_LMDB=ON
  -DUSE_LEVELDB=OFF
  -DUSE_OPENCV="$([ "$OPENCV" = 1 ] && echo ON || echo OFF)"
  -DBUILD_python=ON
  -DBUILD_python_layer=ON
  -DBUILD_docs=OFF
  -DBUILD_matlab=OFF
  -Dpython_version="$PY_VER"
  -DPYTHON_EXECUTABLE="$PYTHON"
  -DPYTHON_INCLUDE_DIR="$PY_INC"
  -DPYTHON_LIBRARY="$PY_LIB"
)
if [ "$CUDA" = 1 ]; then
  command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || die "--cuda: nvcc not found"
  CUDA_ROOT="${CUDA_HOME:-/usr/local/cuda}"
  # /usr/local/cuda has nvcc and the runtime but not cuBLAS/cuRAND: take them from PyPI's
  # NVIDIA wheels, installed into the build's own folder.
  DEPS_DIR="$BUILD_ROOT/cuda-libs"
  say "installing cuBLAS/cuRAND/NCCL wheels into $DEPS_DIR"
  "$PYTHON" -m pip install -q --no-deps --target "$DEPS_DIR" -r "$CUDA_REQS" \
    || die "could not install $CUDA_REQS"
  # CUDA 13 wheels put both libraries under nvidia/cu13; older ones under nvidia/<name>.
  NV_DIRS=()
  for d in "$DEPS_DIR"/nvidia/cu13 "$DEPS_DIR"/nvidia/cublas "$DEPS_DIR"/nvidia/curand "$DEPS_DIR"/nvidia/nccl; do
    [ -d "$d/lib" ] && NV_DIRS+=("$d")
  done
  [ ${#NV_DIRS[@]} -gt 0 ] || die "no NVIDIA libraries found in $DEPS_DIR"
  LIB_PATH="" INC_FLAGS="" NVCC_INC=""
  for d in "${NV_DIRS[@]}"; do
    # The wheels ship only versioned names (libcublas.so.13): add the plain names that
    # FindCUDA's find_library looks for, and let it search there.
    for lib in "$d"/lib/lib*.so.*; do
      base="${lib%%.so.*}.so"
      [ -e "$base" ] || ln -s "$(basename "$lib")" "$base"
    done
    LIB_PATH="$LIB_PATH;$d/lib"
    INC_FLAGS="$INC_FLAGS -I$d/include"
    NVCC_INC="$NVCC_INC;-I$d/include"
  done
  ls "$DEPS_DIR"/nvidia/*/lib/libcublas.so >/dev/null 2>&1 || die "libcublas not found in $DEPS_DIR"
  ls "$DEPS_DIR"/nvidia/*/lib/libcurand.so >/dev/null 2>&1 || die "libcurand not found in $DEPS_DIR"
  NCCL_ROOT="$DEPS_DIR/nvidia/nccl"
  [ -f "$NCCL_ROOT/include/nccl.h" ] && [ -e "$NCCL_ROOT/lib/libnccl.so" ] || die "NCCL not found in $DEPS_DIR"
  # Without a GPU, FindCUDA's automatic architecture list falls back to arches nvcc 13
  # rejects: name them. nvcc 13 hides kernels defined in libcaffe from other binaries (the
  # test binary) unless told not to.
  ARCH_BIN="$CUDA_ARCH"
  ARCH_PTX="${CUDA_ARCH##* }"
  NVCC_FLAGS="-static-global-template-stub=false;-device-entity-has-hidden-visibility=false$NVCC_INC"
  CMAKE_ARGS+=(
    -DCPU_ONLY=OFF -DUSE_CUDNN=OFF
    # NCCL for `caffe train --gpu 0,1,...` (several GPUs of one machine); found at run time
    # through the RPATH (the link directories), like cuBLAS.
    -DUSE_NCCL=ON -DNCCL_INCLUDE_DIR="$NCCL_ROOT/include" -DNCCL_LIBRARIES="$NCCL_ROOT/lib/libnccl.so"
    -DCUDA_TOOLKIT_ROOT_DIR="$CUDA_ROOT"
    -DCUDA_ARCH_NAME=Manual -DCUDA_ARCH_BIN="$ARCH_BIN" -DCUDA_ARCH_PTX="$ARCH_PTX"
    -DCUDA_NVCC_FLAGS="$NVCC_FLAGS"
    -DCMAKE_LIBRARY_PATH="${LIB_PATH#;}"
    -DCMAKE_CXX_FLAGS="${INC_FLAGS# }"
  )
else
  CMAKE_ARGS+=(-DCPU_ONLY=ON)
fi

mkdir -p "$BUILD_ROOT/build"
say "configuring ($VARIANT, OpenCV=$OPENCV, python $PY_VER, numpy $NUMPY_VER) in $BUILD_ROOT/build"
(cd "$BUILD_ROOT/build" && cmake "${CMAKE_ARGS[@]}" ../src > cmake.log 2>&1) \
  || { tail -n 40 "$BUILD_ROOT/build/cmake.log" >&2; die "cmake failed (log: $BUILD_ROOT/build/cmake.log)"; }

# --- build and install ---------------------------------------------------------------------------
say "building with $JOBS jobs (log: $BUILD_ROOT/build/make.log)"
(cd "$BUILD_ROOT/build" && make -j"$JOBS" all > make.log 2>&1 && make install > install.log 2>&1) \
  || { grep -E "error|Error" "$BUILD_ROOT/build/make.log" | head -n 30 >&2; tail -n 20 "$BUILD_ROOT/build/make.log" >&2;
       die "build failed (log: $BUILD_ROOT/build/make.log)"; }

SECONDS_TAKEN=$(( $(date +%s) - START ))
cat > "$BUILD_ROOT/build-info.txt" <<EOF
version=$VERSION
variant=$VARIANT
key=$KEY
cuda_arch=$([ "$CUDA" = 1 ] && echo "$CUDA_ARCH" || echo none)
opencv=$OPENCV
python=$PY_VER ($PYTHON)
numpy=$NUMPY_VER
build_seconds=$SECONDS_TAKEN
EOF
touch "$BUILD_ROOT/.done"
say "built in ${SECONDS_TAKEN}s: $PREFIX"
[ "$CPP_TESTS" = 1 ] && build_cpp_tests
link_venv
echo "$PREFIX"
