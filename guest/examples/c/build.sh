#!/bin/sh
# Builds server.c into the WASI 0.2 component $1 (default c-seed.wasm).
#
# Needs, from Debian 12 (bookworm-security):
#   apt-get install clang-22 lld-22 libclang-rt-22-dev-wasm32 wasi-libc
# and the Rust toolchain's wasm32-wasip2 target (rustup target add
# wasm32-wasip2), for its WASI 0.2 C library (libc.a with sockets) and its
# component linker (wasm-component-ld). Debian's own wasi-libc is WASI 0.1
# (no sockets): only its headers are used.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-c-seed.wasm}
sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
libc="$sysroot/lib/rustlib/wasm32-wasip2/lib/self-contained"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
clang-22 --target=wasm32-wasip2 -O2 -Wall -Wextra -Werror \
    -isystem /usr/include/wasm32-wasi -c "$here/server.c" -o "$tmp/server.o"
"$sysroot/lib/rustlib/$host/bin/wasm-component-ld" \
    --wasm-ld-path "$(command -v wasm-ld-22)" \
    "$libc/crt1-command.o" "$tmp/server.o" -L "$libc" -lc \
    "$(clang-22 --target=wasm32-wasip2 -print-libgcc-file-name)" \
    -o "$out"
