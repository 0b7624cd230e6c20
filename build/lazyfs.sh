#!/usr/bin/env bash
# Builds LazyFS (a FUSE filesystem that drops unsynced data on command) for `npm run test:powercut`
# into .cache/lazyfs, once, from the shared tools folder next to the repository
# (../shared/tools/lazyfs, or $GATEWARDEN_LAZYFS_SRC). Prints the binary's path.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/.cache/lazyfs"
if [[ -x "$out/lazyfs" ]]; then echo "$out/lazyfs"; exit 0; fi
src=${GATEWARDEN_LAZYFS_SRC:-$root/../shared/tools/lazyfs}
if [[ ! -x "$src/build.sh" ]]; then
  echo "LazyFS sources not found at $src (set GATEWARDEN_LAZYFS_SRC)" >&2
  exit 1
fi
bin=$("$src/build.sh" "$out/build" | tail -n 1)
ln -sf "$bin" "$out/lazyfs"
echo "$out/lazyfs"
