#!/bin/sh
# Copy the current engine into a throwaway import tree, so a long sweep keeps measuring the code it
# started with while the working tree changes:  PYTHONPATH=$(sh bench/snapshot.sh) python bench/...
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
snap=$(mktemp -d /tmp/charrnn-snapshot.XXXXXX)
mkdir -p "$snap/charrnn_tui"
for pkg in engine tui corpora; do cp -r "$root/$pkg" "$snap/charrnn_tui/$pkg"; done
cp -r "$root/bench" "$snap/bench"
echo "$snap"
