#!/usr/bin/env bash
# C-level kernel tests on several toolchains (`make test-cross`; tests/test_cross.py runs each
# target separately).  Usage:  ext/test_cross.sh [gcc|clang|aarch64|mingw|all]...
#
#   gcc      host gcc, with OpenMP, runs ext/bnn_ctest.c (every ISA level the CPU has)
#   clang    host clang, WITHOUT OpenMP (the closest this machine gets to Apple's toolchain)
#   aarch64  aarch64-linux-gnu-gcc, static, run under qemu-aarch64: the NEON level
#   mingw    x86_64-w64-mingw32-gcc: Windows build of the kernels (compile + link); run under
#            wine only when BNNLAB_CROSS_WINE=1 and wine is installed
#
# A missing toolchain prints "SKIP <target>: <tool> not found" and does not fail, unless
# BNNLAB_CROSS_STRICT=1.  Exit status: 0 when every target that ran passed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${BNNLAB_CROSS_OUT:-build/cross}
mkdir -p "$OUT"
FLAGS=(-O2 -std=gnu11 -ffp-contract=off -Wall -Wno-unused-function -Wno-unused-variable -Iext)
status=0

skip() {   # target tool
  echo "SKIP $1: $2 not found"
  if [ "${BNNLAB_CROSS_STRICT:-0}" = 1 ]; then status=1; fi
}

run_target() {
  local t=$1
  case $t in
    gcc)
      command -v gcc >/dev/null || { skip gcc gcc; return; }
      gcc "${FLAGS[@]}" -fopenmp ext/bnn_ctest.c -o "$OUT/ctest-gcc" -lpthread -lm &&
        "$OUT/ctest-gcc" ;;
    clang)
      command -v clang >/dev/null || { skip clang clang; return; }
      clang "${FLAGS[@]}" ext/bnn_ctest.c -o "$OUT/ctest-clang" -lpthread -lm &&
        "$OUT/ctest-clang" ;;
    aarch64)
      command -v aarch64-linux-gnu-gcc >/dev/null || { skip aarch64 aarch64-linux-gnu-gcc; return; }
      command -v qemu-aarch64 >/dev/null || { skip aarch64 qemu-aarch64; return; }
      aarch64-linux-gnu-gcc "${FLAGS[@]}" -static ext/bnn_ctest.c -o "$OUT/ctest-aarch64" -lpthread -lm &&
        qemu-aarch64 "$OUT/ctest-aarch64" | tee "$OUT/ctest-aarch64.log" &&
        grep -q "neon     1 thread(s): ok" "$OUT/ctest-aarch64.log" ;;
    mingw)
      command -v x86_64-w64-mingw32-gcc >/dev/null || { skip mingw x86_64-w64-mingw32-gcc; return; }
      x86_64-w64-mingw32-gcc "${FLAGS[@]}" ext/bnn_ctest.c -o "$OUT/ctest-mingw.exe" -lm &&
        echo "mingw: built $OUT/ctest-mingw.exe ($(stat -c %s "$OUT/ctest-mingw.exe") bytes)" || return 1
      if [ "${BNNLAB_CROSS_WINE:-0}" = 1 ] && command -v wine >/dev/null; then
        wine "$OUT/ctest-mingw.exe"
      fi ;;
    *)
      echo "unknown target $t (gcc, clang, aarch64, mingw, all)"; return 2 ;;
  esac
}

targets=("$@")
if [ ${#targets[@]} -eq 0 ] || [ "${targets[0]}" = all ]; then targets=(gcc clang aarch64 mingw); fi
for t in "${targets[@]}"; do
  echo "== $t"
  start=$SECONDS
  if run_target "$t"; then
    echo "== $t: ok ($(( SECONDS - start )) s)"
  else
    echo "== $t: FAILED"
    status=1
  fi
done
exit $status
