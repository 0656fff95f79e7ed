#!/usr/bin/env bash
# Builds the addon with AddressSanitizer and UndefinedBehaviorSanitizer
# (`npm run build:asan`): libfcgi and our C++ both instrumented, into
# build-asan/build/Release/fcgi.node. build/ (the normal build) is untouched:
# node-gyp always writes to ./build, so the build runs in build-asan/, a
# staging directory holding a copy of binding.gyp and links to native/, deps/
# and node_modules/. binding.gyp's libfcgi_sanitize variable adds the flags.
#
# Use it with scripts/test-asan.sh (`npm run test:asan`), or by hand:
#   LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
#   ASAN_OPTIONS=detect_leaks=0 LIBFCGI_ADDON=build-asan/build/Release/fcgi.node node app.mjs
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

node scripts/fetch-libfcgi.mjs
stage=build-asan
mkdir -p "$stage"
cp binding.gyp "$stage/binding.gyp"
for d in native deps node_modules; do
  ln -sfn "../$d" "$stage/$d"
done
cd "$stage"
npx --no node-gyp rebuild -j max --libfcgi_sanitize=1
addon=build/Release/fcgi.node
# Check that the sanitizers really are in: the addon needs their runtimes.
if ! ldd "$addon" | grep -q libasan; then
  echo "build-asan: $stage/$addon is not linked with libasan" >&2
  exit 1
fi
echo "build-asan: $stage/$addon"
