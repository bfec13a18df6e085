#!/usr/bin/env bash
# pause-under-load.sh: a 3-node `up` cluster, 8 clients pushing their own branches of one repo
# through nodes 1 and 2 for 60 s; node 3 is stopped (SIGSTOP) 10 s in and resumed 20 s later.
# It prints when node 3 was repaired, the pushes' outcome and each node's replication counters;
# the nodes' JSON log is $DATA.log. (docs/BENCHMARKS.md, "A node paused under load".)
#
#   npm run build && DATA=/tmp/pause PORT=5501 bash bench/pause-under-load.sh
set -u
MAIN=${MAIN:-$(cd "$(dirname "$0")/.." && pwd)/dist/cli/main.js}
DATA=${DATA:-/tmp/gitrep-pause}
PORT=${PORT:-5501}
P1=$PORT; P2=$((PORT + 1)); P3=$((PORT + 2))
rm -rf "$DATA" "$DATA-work"
node "$MAIN" up --data "$DATA" --base-port "$PORT" --no-ssh --log-format json > "$DATA.log" 2>&1 &
UP=$!
trap 'kill $UP 2>/dev/null' EXIT
for _ in $(seq 1 60); do curl -sf "http://127.0.0.1:$P3/health" > /dev/null && [ -f "$DATA/admin-token" ] && break; sleep 1; done
T=$(cat "$DATA/admin-token")
url() { echo "http://admin:$T@127.0.0.1:$1/demo/paused.git"; }
curl -sf -X POST "http://127.0.0.1:$P1/repos" -H "authorization: Bearer $T" -H 'content-type: application/json' \
  -d '{"repo_id":"demo/paused"}' > /dev/null
mkdir -p "$DATA-work" && cd "$DATA-work" || exit 1
git init -q seed && git -C seed commit -q --allow-empty -m init && git -C seed push -q "$(url $P1)" HEAD:refs/heads/main
for c in 1 2 3 4 5 6 7 8; do
  git clone -q "$(url $P1)" "c$c" && git -C "c$c" config user.email load@example.com && git -C "c$c" config user.name load
done
end=$(($(date +%s) + 60))
PIDS=""
for c in 1 2 3 4 5 6 7 8; do
  port=$((c % 2 == 0 ? P1 : P2))
  (
    cd "c$c" || exit 1
    i=0
    while [ "$(date +%s)" -lt "$end" ]; do
      i=$((i + 1)); echo "$i" > "f$c"; git add "f$c"; git commit -qm "c$c $i"
      if git push -q "$(url $port)" "HEAD:refs/heads/b$c" 2>> ../push-errors.txt; then echo ok >> ../ok.txt
      else echo failed >> ../failed.txt; git pull -q --rebase "$(url $port)" "b$c" 2> /dev/null; fi
    done
  ) &
  PIDS="$PIDS $!"
done
N3=$(pgrep -f "serve --id node-3 --port $P3")
sleep 10; kill -STOP "$N3"; stopped=$(date +%s)
sleep 20; kill -CONT "$N3"; resumed=$(date +%s)
# shellcheck disable=SC2086
wait $PIDS
sleep 30
echo "node 3 stopped at $stopped, resumed at $resumed; pushes ended at $end"
grep -a '"node":"node-3"' "$DATA.log" | grep -a '"replica repaired"\|replica repair failed\|never reached the node' |
  sed -E 's/.*"time":([0-9]+)[0-9]{3},.*"msg":"([^"]*)".*/\1 \2/' | while read -r t msg; do echo "  +$((t - resumed)) s after resume: $msg"; done
echo "pushes ok $(wc -l < ok.txt), failed $(cat failed.txt 2> /dev/null | wc -l)"
for p in $P1 $P2 $P3; do
  echo "  node on $p: $(curl -s -H "authorization: Bearer $T" "http://127.0.0.1:$p/metrics" |
    grep -E '^gitrep_(replicas_marked_stale_total|repairs_total|connectivity_checks_total|packs_shipped_total)' | tr '\n' ' ')"
done
