#!/bin/sh
# cryptsleep(8): the pinned Deno runs the bundle. No config or lock file is looked for, no module is fetched,
# no update is checked: the package holds everything it runs. Paths are found from this script's own place
# (/usr/sbin → /usr/lib/cryptsleep), so an unpacked tree runs too.
# readlink is a process of its own (each cycle starts here): spawned only when this path is a symlink or does not
# lead to the tree (a relative path)
self=$0
case $self in /*/sbin/*) [ -L "$self" ] || [ ! -x "${self%/sbin/*}/lib/cryptsleep/deno" ] ;; *) true ;; esac &&
  self=$(readlink -f "$self")
lib=${self%/sbin/*}/lib/cryptsleep
# deno's caches (sqlite, written late) must not sit on a disk the cycle locks: as root they live in /run (tmpfs)
if [ -w /run ]; then
  DENO_DIR=/run/cryptsleep-deno
else
  DENO_DIR="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/cryptsleep/deno"
fi
export DENO_DIR
# what `cryptsleep install` points systemd-suspend.service at
export CRYPTSLEEP_EXEC="$self"
export DENO_NO_UPDATE_CHECK=1 DENO_NO_PROMPT=1
# V8's lite mode: no optimizing compiler threads competing with the cycle for the CPU, a smaller heap (on the bed:
# `plan` 20 % faster, 5 MiB less RSS); cryptsleep's own JS is never hot. No lazy compilation: deno's code cache
# then holds every function, none is compiled again per process (cli/v8_flags.ts says why)
exec "$lib/deno" run -A --no-config --no-lock --no-remote --no-npm --v8-flags=--lite-mode,--no-lazy "$lib/cryptsleep.js" "$@"
