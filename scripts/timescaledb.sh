#!/usr/bin/env bash
# Builds TimescaleDB 2.28.3 from ../shared/vendor/ into a PRIVATE, relocatable copy of the
# system's PostgreSQL 15 (never into /usr/lib/postgresql/15: a TimescaleDB that is installed but
# not preloaded there changes what every other private test server sees, see issue 13).
#
#   bash scripts/timescaledb.sh      -> prints the copy's bin directory on stdout (exit 0),
#                                        or why it could not (stderr, exit 3); messages on stderr
#
# PostgreSQL finds its share/ and lib/ directories relative to its own binary, so copying
# /usr/lib/postgresql/15 and /usr/share/postgresql/15 under $PREFIX/usr/... and running
# `make install DESTDIR=$PREFIX` gives a server that loads the extension while the system one
# stays untouched.  Idempotent: a stamp file records a verified build and the next run only
# prints the bin directory.  The build (~1-2 min on 2 cores) needs cmake, gcc, make and
# postgresql-server-dev-15; as root they are apt-get installed when missing.
#
# Environment: FLEETWATCH_TIMESCALEDB_TARBALL (default ../shared/vendor/timescaledb-2.28.3.tar.gz
# beside the repository, or beside the main checkout of a git worktree), FLEETWATCH_CACHE_DIR
# (default $ROOT/.cache, git-ignored by a .gitignore it writes into itself),
# FLEETWATCH_SYSTEM_PG (default /usr/lib/postgresql/15).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION=2.28.3
PGMAJOR=15
TARBALL="${FLEETWATCH_TIMESCALEDB_TARBALL:-$ROOT/../shared/vendor/timescaledb-$VERSION.tar.gz}"
if [ -z "${FLEETWATCH_TIMESCALEDB_TARBALL:-}" ] && [ ! -f "$TARBALL" ]; then
  # a git worktree lives elsewhere: look beside the main checkout too
  COMMON="$(git -C "$ROOT" rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)"
  ALT="$(dirname "${COMMON:-/nonexistent/.git}")/../shared/vendor/timescaledb-$VERSION.tar.gz"
  [ -f "$ALT" ] && TARBALL="$ALT"
fi
CACHE="${FLEETWATCH_CACHE_DIR:-$ROOT/.cache}"
SYSLIB="${FLEETWATCH_SYSTEM_PG:-/usr/lib/postgresql/$PGMAJOR}"
SYSSHARE="/usr/share/postgresql/$PGMAJOR"
PREFIX="$CACHE/pg$PGMAJOR-timescaledb"
BINDIR="$PREFIX$SYSLIB/bin"
STAMP="$PREFIX/.fleetwatch-timescaledb-$VERSION"

say() { echo "timescaledb.sh: $*" >&2; }
fail() { say "$*"; exit 3; }

if [ -f "$STAMP" ] && [ -x "$BINDIR/postgres" ] && [ -f "$PREFIX$SYSLIB/lib/timescaledb.so" ]; then
  say "already built: TimescaleDB $VERSION in the private PostgreSQL copy $BINDIR"
  echo "$BINDIR"
  exit 0
fi
[ -x "$SYSLIB/bin/postgres" ] && [ -d "$SYSSHARE" ] \
  || fail "no PostgreSQL $PGMAJOR server in $SYSLIB (and $SYSSHARE) to copy"
[ -f "$TARBALL" ] || fail "no TimescaleDB source at $TARBALL"

have() { command -v "$1" >/dev/null 2>&1; }
PG_CONFIG="$SYSLIB/bin/pg_config"
need_deps() {
  ! have cmake || ! have gcc || ! have make || [ ! -x "$PG_CONFIG" ] \
    || [ ! -f "$("$PG_CONFIG" --includedir-server)/postgres.h" ]
}
if need_deps; then
  if [ "$(id -u)" = 0 ] && have apt-get; then
    say "installing build dependencies with apt-get (postgresql-server-dev-$PGMAJOR cmake gcc make libssl-dev)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-upgrade \
      "postgresql-server-dev-$PGMAJOR" cmake gcc make libssl-dev >/dev/null
  fi
  need_deps && fail "build dependencies missing (cmake, gcc, make, postgresql-server-dev-$PGMAJOR) and cannot apt-get them (not root)"
fi

mkdir -p "$CACHE"
[ -f "$CACHE/.gitignore" ] || echo '*' > "$CACHE/.gitignore"   # the cache never gets committed
START=$SECONDS

if [ -x "$BINDIR/postgres" ] && [ -f "$PREFIX$SYSLIB/lib/timescaledb-$VERSION.so" ]; then
  # an earlier run built and installed but did not get to verify: verify only
  say "found an unverified build in $PREFIX; verifying it (delete $PREFIX to rebuild)"
else
  say "copying PostgreSQL $PGMAJOR ($SYSLIB, $SYSSHARE) to $PREFIX"
  rm -rf "$PREFIX"
  mkdir -p "$PREFIX$(dirname "$SYSLIB")" "$PREFIX$(dirname "$SYSSHARE")"
  cp -a "$SYSLIB" "$PREFIX$(dirname "$SYSLIB")/"
  cp -a "$SYSSHARE" "$PREFIX$(dirname "$SYSSHARE")/"

  SRC="$CACHE/build/timescaledb-$VERSION"
  say "building TimescaleDB $VERSION from $TARBALL in $SRC (1-2 min on 2 cores)"
  rm -rf "$SRC"
  mkdir -p "$CACHE/build"
  tar -xzf "$TARBALL" -C "$CACHE/build"
  (
    cd "$SRC"
    ./bootstrap -DPG_CONFIG="$PG_CONFIG" -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
      -DWARNINGS_AS_ERRORS=OFF -DLINTER=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$CACHE/build/cmake.log" 2>&1
    make -C build -j"$(nproc 2>/dev/null || echo 2)" >"$CACHE/build/make.log" 2>&1
    make -C build install DESTDIR="$PREFIX" >"$CACHE/build/install.log" 2>&1
  ) || fail "build failed; see $CACHE/build/{cmake,make,install}.log"
  [ -f "$PREFIX$SYSLIB/lib/timescaledb.so" ] || fail "make install put no timescaledb.so under $PREFIX$SYSLIB/lib"
fi

# Verify with the copy's own binaries (no pg_config): initdb, then a single-user backend with
# the library preloaded creates the extension and reports its version.
CHECK="$(mktemp -d /tmp/fleetwatch-tsdb-check-XXXXXX)"
trap 'rm -rf "$CHECK"' EXIT
RUN=()
if [ "$(id -u)" = 0 ]; then chown nobody "$CHECK"; RUN=(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups --); fi
"${RUN[@]}" "$BINDIR/initdb" -D "$CHECK/data" -U postgres --auth=trust --no-sync >/dev/null \
  || fail "the copy's initdb failed"
GOT="$(echo "CREATE EXTENSION timescaledb; SELECT extversion FROM pg_extension WHERE extname = 'timescaledb';" \
  | "${RUN[@]}" "$BINDIR/postgres" --single -D "$CHECK/data" -c shared_preload_libraries=timescaledb \
      -c timescaledb.telemetry_level=off postgres 2>&1)" || fail "the copy's postgres could not create the extension: $GOT"
echo "$GOT" | grep -q "\"$VERSION\"" || fail "the copy's postgres did not report TimescaleDB $VERSION: $GOT"
[ -e "$SYSLIB/lib/timescaledb.so" ] && say "note: the SYSTEM PostgreSQL also has a timescaledb.so (not ours)"

touch "$STAMP"
say "built and verified TimescaleDB $VERSION in $BINDIR in $((SECONDS - START)) s (system PostgreSQL untouched)"
echo "$BINDIR"
