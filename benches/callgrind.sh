#!/usr/bin/env bash
# User-space instructions per request of one compare server, by callgrind.
#
#   bash benches/callgrind.sh [scs|ts|floor|ceiling|scs-signed|scs-header|scs-cache ...]   (default: scs ts floor)
#   BENCH_WRITE_PCT=50 bash benches/callgrind.sh scs scs-cache                     (another mix)
#
# For each variant, three times: a fresh private redis-server and a fresh server under
# callgrind, sent 2,000 and then (fresh again) 8,000 requests of the bench's mix by
# `compare --drive` (BENCH_USERS users, default 64; BENCH_WRITE_PCT% writes, default 10;
# every read checked). The difference of the two totals over 6,000 is one request's cost, free
# of start-up and of the sessions' creation. Prints each count and the median of the three.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
bin=$(cargo bench --bench compare --no-run --message-format=json 2>/dev/null |
  grep -o '"executable":"[^"]*compare-[^"]*"' | tail -1 | cut -d'"' -f4)
[ -x "$bin" ] || { echo "could not build the compare bench" >&2; exit 1; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Total instructions of a `variant` server that answered `n` requests.
total() {
  local variant=$1 n=$2 dir rport sport vpid
  dir=$(mktemp -d)
  rport=$(free_port); sport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --dir "$dir" --logfile "$dir/redis.log"
  mkfifo "$dir/stdin"
  # The server exits when its stdin closes: the fifo, held open by fd 3 until the drive is done.
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$bin" --serve "$variant" \
    --redis-url "redis://127.0.0.1:$rport" --port "$sport" <"$dir/stdin" >"$dir/out" 2>"$dir/err" &
  vpid=$!
  exec 3>"$dir/stdin"
  for _ in $(seq 1 600); do grep -q READY "$dir/out" 2>/dev/null && break; sleep 0.5; done
  grep -q READY "$dir/out" || { cat "$dir/err" >&2; exit 1; }
  "$bin" --drive "$sport" --requests "$n" 2>>"$dir/drive"
  exec 3>&-
  wait "$vpid" || true
  redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
  awk '/^totals:/ { print $2 }' "$dir/cg.out"
  rm -rf "$dir"
}

variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(scs ts floor)
for variant in "${variants[@]}"; do
  counts=()
  for _ in 1 2 3; do
    a=$(total "$variant" 2000); b=$(total "$variant" 8000)
    counts+=($(((b - a) / 6000)))
  done
  median=$(printf '%s\n' "${counts[@]}" | sort -n | sed -n 2p)
  echo "$variant: ${counts[*]} instructions per request; median $median"
done
