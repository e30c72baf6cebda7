#!/bin/sh
# Quick comparison of async_echo_server (1 thread) and raw_epoll_echo, interleaved, N runs each.
# Usage: bench/run.sh BUILD_DIR [RUNS=5] [CONNECTIONS=100] [SIZE=64] [SECONDS=3]
set -eu
build=$1 runs=${2:-5} conns=${3:-100} size=${4:-64} secs=${5:-3}
one() {  # one() NAME COMMAND...: start the server, run the load, stop the server
  name=$1; shift
  fifo=$(mktemp -u); mkfifo "$fifo"
  taskset -c 0 "$@" > "$fifo" & pid=$!
  read -r line < "$fifo"; rm -f "$fifo"
  port=${line##*:}
  result=$(taskset -c 1 "$build/bench/loadgen" "$port" "$conns" "$size" "$secs")
  kill -INT $pid; wait $pid || true
  echo "$name ${result%% *}"
}
i=0
while [ $i -lt "$runs" ]; do
  one raw_epoll "$build/bench/raw_epoll_echo"
  one sockpat "$build/examples/async_echo_server" --port 0
  i=$((i + 1))
done
