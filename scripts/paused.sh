#!/usr/bin/env bash
# Run a command with the background training run (pid in runs/train.pid) paused, and always resume
# it afterwards. On 2 cores two torch processes at once are each >10x slower, so paused commands
# also wait for each other (a lock), one at a time.
here="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$here/runs"
exec 9>"$here/runs/.paused.lock"
flock 9
pid=$(cat "$here/runs/train.pid" 2>/dev/null || true)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  kill -STOP "$pid"
  trap 'kill -CONT "$pid"' EXIT INT TERM
fi
"$@"
