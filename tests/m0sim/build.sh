#!/bin/sh
# build.sh OUTDIR - builds OUTDIR/m0d (server) and OUTDIR/m0client.
# Extra compiler flags come from $M0SIM_CFLAGS, e.g.
#   M0SIM_CFLAGS=-DM0SIM_INLINE_BALLOC ./build.sh out   (balloc_alloc inlined away)
set -eu
if [ $# -ne 1 ]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi
OUT=$1
SRC=$(cd "$(dirname "$0")" && pwd)
CC=${CC:-gcc}
# As Motr: debug info, frame pointers, symbols exported (-rdynamic).
CFLAGS="-std=c11 -g -O2 -fno-omit-frame-pointer -Wall -Wextra -Werror -pthread"
mkdir -p "$OUT"
set -x
# shellcheck disable=SC2086 # M0SIM_CFLAGS is a list of flags
$CC $CFLAGS ${M0SIM_CFLAGS:-} -rdynamic -o "$OUT/m0d" \
	"$SRC/m0d.c" "$SRC/ctl.c" "$SRC/rpc.c" "$SRC/reqh.c" "$SRC/store.c" \
	"$SRC/btree.c" "$SRC/wire.c" "$SRC/lib.c"
# shellcheck disable=SC2086
$CC $CFLAGS ${M0SIM_CFLAGS:-} -rdynamic -o "$OUT/m0client" \
	"$SRC/m0client.c" "$SRC/wire.c" "$SRC/lib.c"
