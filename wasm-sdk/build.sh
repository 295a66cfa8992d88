#!/usr/bin/env bash
# Builds every plugin of this workspace to target/wasm/NAME.wasm
# (wasm32-unknown-unknown) and the headers example to
# target/wasm/headers.wasi.wasm (wasm32-wasip1). What `make wasm` runs,
# after installing the Debian packages when the Debian route is needed.
#
# Two routes, per target (README.md says more):
# - rustup: the target is installed (`rustup target add ...`): plain cargo;
# - Debian: rustc-web's /usr/bin/cargo, std built from rust-web-src
#   (-Z build-std, allowed on a stable compiler by RUSTC_BOOTSTRAP=1),
#   linked by lld's wasm-ld; for wasip1, libc from wasi-libc.
#
# One build directory, target/wasm-build: cargo keeps it incremental, so a
# run with nothing changed takes seconds.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd .. && pwd)
BUILD="$ROOT/target/wasm-build"
OUT="$ROOT/target/wasm"
export CARGO_TARGET_DIR="$BUILD"

have_rustup_target() {
    command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx "$1"
}

# build TARGET [cargo args...]
build() {
    local target=$1
    shift
    if have_rustup_target "$target"; then
        echo "wasm: $target via rustup"
        cargo build --release --target "$target" "$@"
    else
        echo "wasm: $target via Debian's rustc-web (std from source)"
        local upper flags=()
        upper=$(echo "$target" | tr 'a-z-' 'A-Z_')
        # wasip1's libc (wasi-libc): rustup ships its own copy, Debian here.
        [ "$target" = wasm32-wasip1 ] && flags=("CARGO_TARGET_${upper}_RUSTFLAGS=-L/usr/lib/wasm32-wasi")
        env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 "CARGO_TARGET_${upper}_LINKER=wasm-ld" "${flags[@]}" \
            /usr/bin/cargo build --release --target "$target" -Z build-std=std,panic_abort "$@"
    fi
}

# install SRC DEST: copies only what changed (keeps mtimes for make).
install_wasm() {
    cmp -s "$1" "$2" 2>/dev/null || cp "$1" "$2"
}

build wasm32-unknown-unknown --workspace
build wasm32-wasip1 -p headers

mkdir -p "$OUT"
for f in "$BUILD"/wasm32-unknown-unknown/release/*.wasm; do
    install_wasm "$f" "$OUT/$(basename "$f")"
done
install_wasm "$BUILD/wasm32-wasip1/release/headers.wasm" "$OUT/headers.wasi.wasm"
ls "$OUT"
