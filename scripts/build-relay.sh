#!/bin/sh
# Compiles the C proc-receive relay (helpers/proc-receive-relay.c) to dist/hooks/c/proc-receive,
# the hooks directory a node gives receive-pack when that binary runs. Part of `npm run build`.
# Without a C compiler nothing is built and the build goes on: nodes use the Perl relay instead.
# A relay built before stays when this build cannot make one: nodes running from this dist/
# picked it when they started and run it for every push.
cd "$(dirname "$0")/.." || exit 1
out=dist/hooks/c
cc=${CC:-cc}
if ! command -v "$cc" >/dev/null 2>&1; then
  echo "build-relay: no C compiler ($cc): nothing built (nodes use the Perl proc-receive relay if none was built before)" >&2
  exit 0
fi
mkdir -p "$out"
# Built already from this source (and it runs): nothing to do on every `npm test`.
if [ "$out/proc-receive" -nt helpers/proc-receive-relay.c ] && "$out/proc-receive" --check 2>/dev/null; then
  exit 0
fi
# Built beside its final name and moved in: a node starting meanwhile never runs half a binary.
if "$cc" -O2 -Wall -o "$out/proc-receive.tmp" helpers/proc-receive-relay.c && "$out/proc-receive.tmp" --check; then
  mv -f "$out/proc-receive.tmp" "$out/proc-receive"
else
  echo "build-relay: the C relay did not build (nodes use the Perl proc-receive relay if none was built before)" >&2
  rm -f "$out/proc-receive.tmp"
fi
exit 0
