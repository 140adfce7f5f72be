#!/bin/sh
# build.sh OUTDIR - builds OUTDIR/m0d (server) and OUTDIR/m0client.
# Extra compiler flags come from $M0SIM_CFLAGS, e.g.
#   M0SIM_CFLAGS=-DM0SIM_INLINE_BALLOC ./build.sh out   (balloc_alloc inlined away)
# With RI_CONTROL_LIB (path of libri_control.a) and RI_CONTROL_INCLUDE (the
# folder of ri_control.h), m0d links ri-control and serves its control
# socket; without them m0d is built without control.
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
CONTROL_CFLAGS=""
CONTROL_LIBS=""
if [ -n "${RI_CONTROL_LIB:-}" ]; then
	if [ ! -f "$RI_CONTROL_LIB" ] || [ ! -f "${RI_CONTROL_INCLUDE:?RI_CONTROL_INCLUDE must be set with RI_CONTROL_LIB}/ri_control.h" ]; then
		echo "$0: $RI_CONTROL_LIB or $RI_CONTROL_INCLUDE/ri_control.h is missing" >&2
		exit 1
	fi
	CONTROL_CFLAGS="-DM0SIM_CONTROL -I$RI_CONTROL_INCLUDE"
	# What the Rust staticlib needs from the system.
	CONTROL_LIBS="$RI_CONTROL_LIB -lpthread -ldl -lm -lrt -lgcc_s"
fi
mkdir -p "$OUT"
set -x
# shellcheck disable=SC2086 # M0SIM_CFLAGS and CONTROL_* are lists of flags
$CC $CFLAGS ${M0SIM_CFLAGS:-} $CONTROL_CFLAGS -rdynamic -o "$OUT/m0d" \
	"$SRC/m0d.c" "$SRC/ctl.c" "$SRC/control.c" "$SRC/rpc.c" "$SRC/reqh.c" \
	"$SRC/store.c" "$SRC/btree.c" "$SRC/wire.c" "$SRC/lib.c" $CONTROL_LIBS
# shellcheck disable=SC2086
$CC $CFLAGS ${M0SIM_CFLAGS:-} -rdynamic -o "$OUT/m0client" \
	"$SRC/m0client.c" "$SRC/wire.c" "$SRC/lib.c"
