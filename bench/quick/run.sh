#!/bin/sh
# A quick comparison from the event-loop work (issue 4), until bench/ has the full harness
# (issue 8): async_echo_server (1 thread) against a raw epoll echo server, interleaved
# A B A B ..., server pinned to CPU 0 and the ping-pong client to CPU 1; take the medians.
# Usage: bench/quick/run.sh ASYNC_ECHO_SERVER [RUNS=5] [CONNECTIONS=100] [SIZE=64] [SECONDS=3]
#   e.g. cmake -S . -B build/rel -G Ninja -DCMAKE_BUILD_TYPE=Release -DSOCKPAT_BUILD_TESTS=OFF
#        cmake --build build/rel --target async_echo_server
#        bench/quick/run.sh build/rel/examples/async_echo_server 5 100 64 3
set -eu
here=$(dirname "$0")
server=$1 runs=${2:-5} conns=${3:-100} size=${4:-64} secs=${5:-3}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
${CXX:-g++} -O2 -o "$out/raw_epoll_echo" "$here/raw_epoll_echo.cpp"
${CXX:-g++} -O2 -o "$out/ping_pong" "$here/ping_pong.cpp"
one() {  # one NAME COMMAND...: start the server, run the load, stop the server with SIGINT
  name=$1; shift
  mkfifo "$out/fifo"
  taskset -c 0 "$@" > "$out/fifo" & pid=$!
  read -r line < "$out/fifo"; rm -f "$out/fifo"
  port=${line##*:}
  result=$(taskset -c 1 "$out/ping_pong" "$port" "$conns" "$size" "$secs")
  kill -INT $pid; wait $pid || true
  echo "$name ${result%% *}"
}
i=0
while [ $i -lt "$runs" ]; do
  one raw_epoll "$out/raw_epoll_echo"
  one sockpat "$server" --port 0
  i=$((i + 1))
done
