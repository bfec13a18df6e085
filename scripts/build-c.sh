#!/bin/sh
# Compiles the C helpers, part of `npm run build`:
# - the proc-receive relay (helpers/proc-receive-relay.c) to dist/hooks/c/proc-receive, the hooks
#   directory a node gives receive-pack when that binary runs (else the Perl relay);
# - the spawn helper (helpers/spawn-helper.c) to dist/helpers/c/spawn-helper, which starts git
#   for a node when that binary runs (else the Python helper, else the Node.js one).
# Without a C compiler nothing is built and the build goes on: nodes use the fallbacks. A binary
# built before stays when this build cannot make one: nodes running from this dist/ picked it
# when they started.
cd "$(dirname "$0")/.." || exit 1
cc=${CC:-cc}
if ! command -v "$cc" >/dev/null 2>&1; then
  echo "build-c: no C compiler ($cc): nothing built (nodes use the Perl relay and the Python or Node.js spawn helper if none was built before)" >&2
  exit 0
fi

# build <source> <output> <what>: compiled beside its final name and moved in, so a node starting
# meanwhile never runs half a binary; nothing to do when built already from this source (and it runs).
build() {
  src=$1 out=$2 what=$3
  mkdir -p "$(dirname "$out")"
  if [ "$out" -nt "$src" ] && "$out" --check 2>/dev/null; then
    return 0
  fi
  if "$cc" -O2 -Wall -o "$out.tmp" "$src" && "$out.tmp" --check; then
    mv -f "$out.tmp" "$out"
  else
    echo "build-c: the $what did not build (nodes use its fallback if none was built before)" >&2
    rm -f "$out.tmp"
  fi
}

build helpers/proc-receive-relay.c dist/hooks/c/proc-receive "C relay"
build helpers/spawn-helper.c dist/helpers/c/spawn-helper "C spawn helper"
exit 0
