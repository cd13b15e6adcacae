#!/usr/bin/env bash
# Build the release binaries: one per target of `deno compile --target`, into
# dist/filesync-<target>[.exe], plus dist/SHA256SUMS over the files built.
#
#   bash scripts/release.sh [--dry-run] [--skip-unavailable] [--targets T1,T2,...]
#
# --dry-run           print each target's deno command (scripts/compile.sh --dry-run), build nothing
# --skip-unavailable  skip, with one line each, targets whose Deno runtime or native QUIC addon
#                     cannot be had (compile.sh exit 3) instead of failing
# --targets           build only these targets
#
# The runtime: deno downloads denort for each target. Offline, put the runtimes in a folder as
# denort-<target> (denort-<target>.exe for Windows) and set DENORT_DIR to it; DENORT_BIN, which
# names a single runtime, is accepted only when one target is built.
#
# aarch64-pc-windows-msvc is never built: @chainsafe/libp2p-quic publishes no Windows-on-ARM
# addon, and Windows on ARM runs the x86_64 build under its emulation.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "release.sh: $1" >&2; exit "${2:-1}"; }

# Every target `deno compile --target` accepts (Deno 2.9); tests/unit/compile_script_test.ts
# checks this list against deno's own.
ALL_TARGETS=(
  x86_64-unknown-linux-gnu
  aarch64-unknown-linux-gnu
  x86_64-apple-darwin
  aarch64-apple-darwin
  x86_64-pc-windows-msvc
  aarch64-pc-windows-msvc
)
UNSUPPORTED_aarch64_pc_windows_msvc="no QUIC addon: @chainsafe/libp2p-quic publishes none for Windows on ARM (the x86_64-pc-windows-msvc build runs there under emulation)"

dry_run=0
skip_unavailable=0
targets=("${ALL_TARGETS[@]}")
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --skip-unavailable) skip_unavailable=1; shift ;;
    --targets) [[ -n "${2:-}" ]] || die "--targets needs a value" 2; IFS=, read -ra targets <<<"$2"; shift 2 ;;
    --targets=*) IFS=, read -ra targets <<<"${1#*=}"; shift ;;
    -h | --help) sed -n '2,15s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" 2 ;;
  esac
done
for t in "${targets[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || die "unknown target '$t'" 2
done
if [[ -n "${DENORT_BIN:-}" && "${#targets[@]}" -gt 1 ]]; then
  die "DENORT_BIN names one runtime but ${#targets[@]} targets are built: use DENORT_DIR, or --targets with one target" 2
fi
if [[ -n "${DENORT_DIR:-}" ]]; then
  [[ "$DENORT_DIR" == /* ]] || DENORT_DIR="$PWD/$DENORT_DIR"
  [[ -d "$DENORT_DIR" ]] || die "DENORT_DIR=$DENORT_DIR: no such folder" 2
fi

exe_of() { [[ "$1" == *-windows-* ]] && echo ".exe" || true; }

if [[ "$dry_run" == 0 ]]; then
  mkdir -p dist
  # Stale artifacts of an earlier run would otherwise be published with this one.
  for t in "${ALL_TARGETS[@]}"; do rm -f "dist/filesync-$t$(exe_of "$t")"; done
  rm -f dist/SHA256SUMS
fi

built=()
for t in "${targets[@]}"; do
  var="UNSUPPORTED_${t//-/_}"
  if [[ -n "${!var:-}" ]]; then
    echo "release.sh: skip $t: ${!var}" >&2
    continue
  fi
  out="dist/filesync-$t$(exe_of "$t")"
  runtime=()
  if [[ -n "${DENORT_DIR:-}" ]]; then
    runtime=(env "DENORT_BIN=$DENORT_DIR/denort-$t$(exe_of "$t")")
  fi
  cmd=(${runtime[@]+"${runtime[@]}"} bash scripts/compile.sh --target "$t" --output "$out")
  echo "release.sh: $t -> $out" >&2
  set +e
  if [[ "$dry_run" == 1 ]]; then
    "${cmd[@]}" --dry-run
  else
    "${cmd[@]}"
  fi
  status=$?
  set -e
  if [[ "$status" == 0 ]]; then
    built+=("$(basename "$out")")
  elif [[ "$status" == 3 && "$skip_unavailable" == 1 ]]; then
    echo "release.sh: skip $t: its runtime or QUIC addon is unavailable (see above)" >&2
  else
    die "cannot build $t (scripts/compile.sh exit $status; --skip-unavailable skips targets whose runtime or addon is unavailable)"
  fi
done

[[ "${#built[@]}" -gt 0 ]] || die "no target was built"

sums=(sha256sum)
command -v sha256sum >/dev/null || sums=(shasum -a 256)
if [[ "$dry_run" == 1 ]]; then
  echo "cd dist && ${sums[*]} ${built[*]} > SHA256SUMS"
else
  (cd dist && "${sums[@]}" "${built[@]}" >SHA256SUMS)
  echo "release.sh: built ${built[*]} and SHA256SUMS in dist/" >&2
fi
