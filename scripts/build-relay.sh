#!/bin/sh
# Compiles the C proc-receive relay (helpers/proc-receive-relay.c) to dist/hooks/c/proc-receive,
# the hooks directory a node gives receive-pack when that binary runs. Part of `npm run build`.
# Without a C compiler nothing is built and the build goes on: nodes use the Perl relay instead.
cd "$(dirname "$0")/.." || exit 1
out=dist/hooks/c
cc=${CC:-cc}
if ! command -v "$cc" >/dev/null 2>&1; then
  echo "build-relay: no C compiler ($cc): nodes will use the Perl proc-receive relay" >&2
  rm -f "$out/proc-receive"
  exit 0
fi
mkdir -p "$out"
# Built beside its final name and moved in: a node starting meanwhile never runs half a binary.
if "$cc" -O2 -Wall -o "$out/proc-receive.tmp" helpers/proc-receive-relay.c && "$out/proc-receive.tmp" --check; then
  mv -f "$out/proc-receive.tmp" "$out/proc-receive"
else
  echo "build-relay: the C relay did not build: nodes will use the Perl proc-receive relay" >&2
  rm -f "$out/proc-receive.tmp" "$out/proc-receive"
fi
exit 0
