#!/usr/bin/env bash
# Build the single-file executable dist/filesync (or dist/filesync-<target> with --target T).
#
# `deno compile` downloads its runtime (denort) unless DENORT_BIN points at one; on a machine
# without access to Deno's servers, set DENORT_BIN to a denort binary of the same version.
set -euo pipefail
cd "$(dirname "$0")/.."

target=""
if [[ "${1:-}" == "--target" ]]; then
  target="${2:?--target needs a value}"
fi
out="dist/filesync${target:+-$target}"
mkdir -p dist

if [[ -n "${DENORT_BIN:-}" ]]; then
  echo "using runtime from DENORT_BIN=${DENORT_BIN}"
fi

args=(
  compile
  --unstable-kv
  --allow-read --allow-write --allow-env --allow-sys --allow-net --allow-run --allow-ffi
  # Worker modules are loaded by URL at run time, so they must be named to be embedded.
  --include src/sync/scan_worker.ts
  --output "$out"
)
if [[ -n "$target" ]]; then args+=(--target "$target"); fi
# The native QUIC addon ships in a platform package; embed it when it is installed.
for addon in node_modules/@chainsafe/libp2p-quic-*; do
  [[ -d "$addon" ]] && args+=(--include "$addon")
done

# The project's pinned Deno (npm devDependency) when installed, else the one on PATH.
DENO=deno
[[ -x node_modules/.bin/deno ]] && DENO=node_modules/.bin/deno
exec "$DENO" "${args[@]}" main.ts
