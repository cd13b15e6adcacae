#!/usr/bin/env bash
# Build FileSync as one self-contained executable with `deno compile`.
#
#   bash scripts/compile.sh [--target TRIPLE] [--output PATH] [--dry-run]
#
# Without --target it builds for the machine it runs on, into dist/filesync; with --target it
# builds dist/filesync-TRIPLE (dist/filesync-TRIPLE.exe for Windows). --dry-run prints the
# deno command, one argument per line (a runnable shell command), and builds and fetches nothing.
#
# The runtime: `deno compile` writes the program into a copy of denort, the Deno runtime without
# the tooling, of the same version as the deno that compiles. It downloads denort for the target
# from Deno's release server unless DENORT_BIN names a denort binary (of that version, for that
# target); this script says which one it uses.
#
# The native QUIC addon: @chainsafe/libp2p-quic loads a Node-API binary from a per-platform npm
# package (@chainsafe/libp2p-quic-<platform>). npm installs only the one for this machine, so for
# another target this script fetches the target's package (`npm pack`, the exact version from
# package-lock.json) into node_modules for the build and removes it afterwards. The same is done,
# best effort, for cbor-extract, an optional native speed-up of cbor-x.
#
# Exit status: 0 built (or printed), 2 usage error, 3 something the build needs could not be had
# (the runtime or a native addon for the target), anything else a failed build.
set -euo pipefail
# DENORT_BIN may be relative to where the caller is; deno reads it after the cd below.
if [[ -n "${DENORT_BIN:-}" && "$DENORT_BIN" != /* ]]; then export DENORT_BIN="$PWD/$DENORT_BIN"; fi
cd "$(dirname "$0")/.."

usage() { sed -n '2,8s/^# \{0,1\}//p' "$0"; }
die() { echo "compile.sh: $1" >&2; exit "${2:-1}"; }

target=""
target_given=0
output=""
dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --target) target="${2:-}"; target_given=1; [[ -n "$target" ]] || die "--target needs a value" 2; shift 2 ;;
    --target=*) target="${1#*=}"; target_given=1; [[ -n "$target" ]] || die "--target needs a value" 2; shift ;;
    --output | -o) output="${2:-}"; [[ -n "$output" ]] || die "--output needs a value" 2; shift 2 ;;
    --output=*) output="${1#*=}"; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" 2 ;;
  esac
done

# The project's pinned Deno (npm devDependency) when installed, else the one on PATH.
DENO=deno
[[ -x node_modules/.bin/deno ]] && DENO=node_modules/.bin/deno
command -v "$DENO" >/dev/null || die "no deno: run npm install first"

# Facts from the local install, no network: host target, Deno version, and the exact versions of
# the native platform packages that package-lock.json pins.
facts="$("$DENO" eval --quiet '
  const lock = JSON.parse(Deno.readTextFileSync("package-lock.json")).packages ?? {};
  const opt = (p) => lock[p]?.optionalDependencies ?? {};
  const q = opt("node_modules/@chainsafe/libp2p-quic");
  const c = opt("node_modules/cbor-extract");
  console.log(Deno.build.target);
  console.log(Deno.version.deno);
  for (const [name, version] of Object.entries({ ...q, ...c })) console.log(name, version);
  // Worker modules: new Worker(new URL("./x.ts", import.meta.url)) anywhere under src/.
  const worker = /new\s+Worker\(\s*new\s+URL\(\s*["\x27]([^"\x27]+)["\x27]\s*,\s*import\.meta\.url/g;
  const walk = (dir) => {
    for (const e of [...Deno.readDirSync(dir)].sort((a, b) => a.name < b.name ? -1 : 1)) {
      const path = `${dir}/${e.name}`;
      if (e.isDirectory) walk(path);
      else if (/\.[jt]s$/.test(e.name)) {
        for (const m of Deno.readTextFileSync(path).matchAll(worker)) {
          const url = new URL(m[1], new URL(path, `file://${Deno.cwd()}/`));
          console.log("worker", url.pathname.slice(Deno.cwd().length + 1));
        }
      }
    }
  };
  walk("src");
')" || die "cannot read package-lock.json or src/"
host="$(sed -n 1p <<<"$facts")"
deno_version="$(sed -n 2p <<<"$facts")"
lock_version() { awk -v n="$1" '$1 == n { print $2 }' <<<"$facts"; }
workers=()
while read -r w; do workers+=("$w"); done < <(awk '$1 == "worker" { print $2 }' <<<"$facts" | sort -u)

target="${target:-$host}"
# The targets of `deno compile --target` and their npm platform names (process.platform-arch).
case "$target" in
  x86_64-unknown-linux-gnu) plat=linux-x64 quic_suffix=linux-x64-gnu ;;
  aarch64-unknown-linux-gnu) plat=linux-arm64 quic_suffix=linux-arm64-gnu ;;
  x86_64-apple-darwin) plat=darwin-x64 quic_suffix=darwin-x64 ;;
  aarch64-apple-darwin) plat=darwin-arm64 quic_suffix=darwin-arm64 ;;
  x86_64-pc-windows-msvc) plat=win32-x64 quic_suffix=win32-x64-msvc ;;
  aarch64-pc-windows-msvc) plat=win32-arm64 quic_suffix=win32-arm64-msvc ;;
  *) die "unknown target '$target' (see: deno compile --help)" 2 ;;
esac
exe=""
[[ "$target" == *-windows-* ]] && exe=".exe"
if [[ -z "$output" && "$target_given" == 0 ]]; then output="dist/filesync$exe"; fi
output="${output:-dist/filesync-$target$exe}"

quic_pkg="@chainsafe/libp2p-quic-$quic_suffix"
quic_dir="node_modules/$quic_pkg"
quic_version="$(lock_version "$quic_pkg")"
if [[ ! -d "$quic_dir" && -z "$quic_version" ]]; then
  die "no QUIC addon for $target: @chainsafe/libp2p-quic publishes no $quic_pkg" 3
fi

# --- the runtime -----------------------------------------------------------------------------
if [[ -n "${DENORT_BIN:-}" ]]; then
  [[ -f "$DENORT_BIN" ]] || die "DENORT_BIN=$DENORT_BIN: no such file" 3
  echo "compile.sh: runtime: DENORT_BIN=$DENORT_BIN (must be denort $deno_version for $target)" >&2
else
  echo "compile.sh: runtime: denort $deno_version for $target, downloaded by deno (cached in DENO_DIR); set DENORT_BIN to use a local one" >&2
fi

# --- the command -----------------------------------------------------------------------------
args=(
  compile
  --unstable-kv
  # The permissions of the `filesync` task in deno.json: files, env (FILESYNC_*, HOME), OS info,
  # network (libp2p, control API), subprocesses (napi-rs's libc probe), FFI (Node-API addons).
  --allow-read --allow-write --allow-env --allow-sys --allow-net --allow-run --allow-ffi
)
# Worker modules are loaded by URL at run time, so they must be named to be embedded.
# They are found in src/ by the eval above.
for worker in ${workers[@]+"${workers[@]}"}; do
  args+=(--include "$worker")
done
# With a node_modules folder, deno compile embeds all of it; these are build tools and types
# that the program never loads (the deno package alone is ~90 MB).
args+=(--exclude node_modules/deno --exclude node_modules/@deno --exclude node_modules/.bin)
args+=(--exclude node_modules/@types)

# The QUIC addon of the target, and no other platform's.
args+=(--include "$quic_dir")
for dir in node_modules/@chainsafe/libp2p-quic-*; do
  [[ -d "$dir" && "$dir" != "$quic_dir" ]] && args+=(--exclude "$dir")
done

# cbor-extract: for this machine, whatever npm installed (it may have built it from source into
# build/). For another target, only that target's prebuilt package; cbor-x runs without it.
cbor_pkg="@cbor-extract/cbor-extract-$plat"
cbor_dir="node_modules/$cbor_pkg"
cbor_version="$(lock_version "$cbor_pkg")"
fetch_cbor=0
if [[ "$target" != "$host" ]]; then
  [[ -d node_modules/cbor-extract/build ]] && args+=(--exclude node_modules/cbor-extract/build)
  for dir in node_modules/@cbor-extract/cbor-extract-*; do
    [[ -d "$dir" && "$dir" != "$cbor_dir" ]] && args+=(--exclude "$dir")
  done
  [[ ! -d "$cbor_dir" && -n "$cbor_version" ]] && fetch_cbor=1
fi

args+=(--output "$output")
[[ "$target_given" == 1 ]] && args+=(--target "$target")
args+=(main.ts)

if [[ "$dry_run" == 1 ]]; then
  [[ -d "$quic_dir" ]] || echo "compile.sh: would fetch $quic_pkg@$quic_version into $quic_dir (npm pack), removed after the build" >&2
  [[ "$fetch_cbor" == 1 ]] && echo "compile.sh: would fetch $cbor_pkg@$cbor_version into $cbor_dir (npm pack, optional), removed after the build" >&2
  # One argument per line, an option and its value together: a runnable shell command.
  printf '%q' "$DENO"
  for a in "${args[@]}"; do
    case "${prev:-}" in
      --include | --exclude | --output | --target) printf ' %q' "$a" ;;
      *) printf ' \\\n  %q' "$a" ;;
    esac
    prev="$a"
  done
  printf '\n'
  exit 0
fi

# --- fetch the target's native packages ------------------------------------------------------
tmp="$(mktemp -d)"
added=()
cleanup() {
  local d
  for d in ${added[@]+"${added[@]}"}; do rm -rf "$d"; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# fetch NAME VERSION DIR: unpack the npm package NAME@VERSION into DIR (which must not exist).
fetch() {
  local file unpacked="$tmp/unpacked-${3//\//_}"
  echo "compile.sh: fetching $1@$2 (npm pack) into $3" >&2
  file="$(cd "$tmp" && npm pack --silent "$1@$2" 2>/dev/null | tail -1)" || return 1
  [[ -n "$file" && -f "$tmp/$file" ]] || return 1
  mkdir -p "$unpacked"
  tar -xzf "$tmp/$file" -C "$unpacked" --strip-components=1 || return 1
  mkdir -p "$(dirname "$3")"
  added+=("$3")
  mv "$unpacked" "$3"
}
if [[ ! -d "$quic_dir" ]]; then
  fetch "$quic_pkg" "$quic_version" "$quic_dir" ||
    die "cannot fetch $quic_pkg@$quic_version from the npm registry (the QUIC addon for $target)" 3
fi
if [[ "$fetch_cbor" == 1 ]] && ! fetch "$cbor_pkg" "$cbor_version" "$cbor_dir"; then
  echo "compile.sh: note: $cbor_pkg@$cbor_version not fetched; the $target build decodes CBOR without the native speed-up" >&2
fi

# --- build -----------------------------------------------------------------------------------
mkdir -p "$(dirname "$output")"
log="$tmp/deno.log"
set +e
{ "$DENO" "${args[@]}" 2>&1 1>&3 | tee "$log" >&2; } 3>&1
status=$?
set -e
if [[ "$status" != 0 ]]; then
  if grep -q "base binary\|denort" "$log"; then
    die "cannot get the Deno runtime (denort $deno_version for $target): set DENORT_BIN to a local copy" 3
  fi
  die "deno compile failed for $target (exit $status)" "$status"
fi
echo "compile.sh: built $output" >&2
