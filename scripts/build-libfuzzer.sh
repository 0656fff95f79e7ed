#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/*.cc) into build-fuzz/ with clang:
#   build-fuzz/wire_fuzzer     native/wire.cc (ScanHead, InputNeed, ...)
#   build-fuzz/libfcgi_fuzzer  the libfcgi we link (deps/libfcgi, patched),
#                              driven as native/server.cc drives it, and
#                              cross-checked against wire.cc
# Everything is compiled with -fsanitize=fuzzer,address,undefined (libfcgi's
# C files too, so that libFuzzer sees their coverage), UBSan without
# recovery: any report is a crash. libfcgi's fcgiapp.c and os_unix.c are
# compiled with native/fcgi_config.h first on the include path, as
# binding.gyp does. Then writes the seed corpora (scripts/fuzz-seeds.mjs)
# into fuzz/corpus/<target>/ (not committed; generated here).
#
# Needs clang with its libFuzzer runtime (Debian: apt-get install clang;
# libclang_rt.fuzzer comes with libclang-rt-dev / libclang-common-*-dev).
# CC/CXX override the compilers. Run the fuzzers with `npm run fuzz:native`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CC=${CC:-clang}
CXX=${CXX:-clang++}
if ! command -v "$CXX" >/dev/null; then
  echo "build-libfuzzer: $CXX not found (apt-get install clang)" >&2
  exit 1
fi
node scripts/fetch-libfcgi.mjs
lib=deps/libfcgi
out=build-fuzz
mkdir -p "$out/obj"

san=(-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1)
inc=(-Inative -I"$lib/include")
cwarn=(-w)  # libfcgi's own warnings are not ours to fix here

for f in fcgiapp os_unix; do
  "$CC" "${san[@]}" "${inc[@]}" "${cwarn[@]}" -c "$lib/libfcgi/$f.c" -o "$out/obj/$f.o"
done
"$CXX" "${san[@]}" "${inc[@]}" -std=c++17 -Wall -Wextra -c native/wire.cc -o "$out/obj/wire.o"

"$CXX" "${san[@]}" "${inc[@]}" -std=c++17 -Wall -Wextra fuzz/wire_fuzzer.cc "$out/obj/wire.o" \
  -o "$out/wire_fuzzer"
# --wrap: the harness sees every read(2)/write(2) libfcgi makes on the
# connection (fuzz/libfcgi_fuzzer.cc, __wrap_read/__wrap_write).
"$CXX" "${san[@]}" "${inc[@]}" -std=c++17 -Wall -Wextra fuzz/libfcgi_fuzzer.cc "$out/obj/wire.o" \
  "$out/obj/fcgiapp.o" "$out/obj/os_unix.o" -pthread -Wl,--wrap=read,--wrap=write \
  -o "$out/libfcgi_fuzzer"

node scripts/fuzz-seeds.mjs fuzz/corpus
echo "build-libfuzzer: $out/wire_fuzzer $out/libfcgi_fuzzer, seeds in fuzz/corpus/"
