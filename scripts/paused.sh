#!/usr/bin/env bash
# Run a command with the background training run (pid in runs/train.pid) paused, and always resume
# it afterwards. On 2 cores two torch processes at once are each >10x slower.
pidfile="$(dirname "$0")/../runs/train.pid"
pid=$(cat "$pidfile" 2>/dev/null || true)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  kill -STOP "$pid"
  trap 'kill -CONT "$pid"' EXIT INT TERM
fi
"$@"
