#!/usr/bin/env bash
# AddressSanitizer run of the compiled RoI kernels (custom_ops/*.cc): `make asan`.
#
# 1. Builds the op library with -fsanitize=address -fno-omit-frame-pointer -g into a temporary
#    directory (never over the installed rcnn_zoo/ops/_rcnn_zoo_ops*.so, which others may be
#    using), with the compile and link flags TensorFlow reports, as setup.py does.
# 2. Runs the op tests (tests/ops) and the layer fuzz tests (tests/layers/test_layer_fuzz.py)
#    with libasan preloaded into Python and RCNN_ZOO_OPS_LIBRARY pointing rcnn_zoo at that
#    library. Only the kernels are instrumented; ASan's allocator puts red zones around every
#    tensor buffer, so a kernel reading or writing outside one is reported.
# 3. Exits non-zero if the build fails, the library is not the one loaded, a test fails, or
#    ASan reported anything (reports are also written to files, so a report is not lost if the
#    process survives it).
#
# Environment: PYTHON (python3), CXX (g++), CUSTOM_OPS_DIR (custom_ops: the sources to build),
# ASAN_TESTS (the pytest arguments), KEEP_ASAN_BUILD=1 keeps the temporary directory.
# Not part of the CI test command: it takes a few minutes on 2 cores.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
CXX="${CXX:-g++}"
SOURCES_DIR="${CUSTOM_OPS_DIR:-custom_ops}"
read -r -a TESTS <<< "${ASAN_TESTS:-tests/ops tests/layers/test_layer_fuzz.py}"
start=$SECONDS

work="$(mktemp -d "${TMPDIR:-/tmp}/rcnn_zoo_asan.XXXXXX")"
if [[ "${KEEP_ASAN_BUILD:-0}" == "1" ]]; then
  echo "asan: keeping $work"
else
  trap 'rm -rf "$work"' EXIT
fi
library="$work/_rcnn_zoo_ops_asan.so"

# -- build ------------------------------------------------------------------------------------
read -r -a tf_cflags <<< "$("$PYTHON" -c 'import tensorflow as tf; print(" ".join(tf.sysconfig.get_compile_flags()))' 2>/dev/null)"
read -r -a tf_lflags <<< "$("$PYTHON" -c 'import tensorflow as tf; print(" ".join(tf.sysconfig.get_link_flags()))' 2>/dev/null)"
asan_flags=(-fsanitize=address -fno-omit-frame-pointer -g)
# -Wno-interference-size: Eigen's headers warn about std::hardware_destructive_interference_size.
cxxflags=("${tf_cflags[@]}" -O1 -fPIC -Wno-sign-compare -Wno-deprecated-declarations
          -Wno-interference-size "${asan_flags[@]}")

shopt -s nullglob
sources=("$SOURCES_DIR"/*.cc)
if (( ${#sources[@]} == 0 )); then
  echo "asan: no sources in $SOURCES_DIR" >&2
  exit 1
fi
echo "asan: compiling ${#sources[@]} kernels from $SOURCES_DIR into $work"
# Two compilers at a time (a TensorFlow kernel takes ~20 s to compile).
printf '%s\n' "${sources[@]}" | xargs -P 2 -I{} sh -c \
  'src="$1"; shift; obj="$0/$(basename "$src" .cc).o"; "$@" -c "$src" -o "$obj"' \
  "$work" {} "$CXX" "${cxxflags[@]}"
"$CXX" -shared "${asan_flags[@]}" "$work"/*.o -o "$library" "${tf_lflags[@]}"
echo "asan: built $library ($(( SECONDS - start )) s)"

# -- run --------------------------------------------------------------------------------------
libasan="$("$CXX" -print-file-name=libasan.so)"
# libstdc++ is preloaded too: python is not linked against it, and ASan can only intercept
# __cxa_throw (TensorFlow throws and catches C++ exceptions) if it is there when ASan starts
# ("CHECK failed: ... real___cxa_throw != 0" otherwise).
libstdcxx="$("$CXX" -print-file-name=libstdc++.so)"
for lib in "$libasan" "$libstdcxx"; do
  if [[ ! -e "$lib" ]]; then
    echo "asan: $CXX has no $(basename "$lib") ($lib)" >&2
    exit 1
  fi
done
# detect_leaks=0: Python and TensorFlow keep allocations until exit by design.
# log_path: every report also goes to $work/asan.<pid>; any such file fails the run.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=86:log_path=$work/asan:${ASAN_OPTIONS:-}"
export RCNN_ZOO_OPS_LIBRARY="$library"
unset RCNN_ZOO_FORCE_FALLBACK
run_asan() { LD_PRELOAD="$libasan:$libstdcxx${LD_PRELOAD:+:$LD_PRELOAD}" "$@"; }

# The tests skip compiled cases when the library is not loaded: make sure it is this one.
run_asan "$PYTHON" - "$library" <<'EOF'
import sys

import rcnn_zoo.ops as ops
from rcnn_zoo.ops import _loader

assert ops.implementation() == "compiled", f"asan: not loaded: {ops.fallback_reason()}"
assert _loader.library_path() == sys.argv[1], _loader.library_path()
print("asan: rcnn_zoo loads", _loader.library_path())
EOF

echo "asan: pytest -q ${TESTS[*]}"
status=0
run_asan "$PYTHON" -m pytest -q "${TESTS[@]}" || status=$?

reports=("$work"/asan.*)
if (( ${#reports[@]} > 0 )); then
  echo "asan: AddressSanitizer reported errors:" >&2
  cat "${reports[@]}" >&2
  status=${status/#0/1}
fi
echo "asan: $( (( status == 0 )) && echo OK || echo FAILED ) (exit $status) in $(( SECONDS - start )) s"
exit "$status"
