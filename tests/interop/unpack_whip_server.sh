#!/usr/bin/env bash
# Unpack Debian's simple-whip-server and the node-* packages it needs into a private folder,
# without dpkg, for machines where `apt-get install simple-whip-server` is impossible: its
# node-websocket depends on Debian's libnode108, which conflicts with NodeSource's `nodejs`
# (Provides/Conflicts: nodejs-legacy). The unpacked server runs on whatever `node` is on PATH
# (node-websocket's native helpers then fall back to their pure-JS versions).
#
# usage: unpack_whip_server.sh [--check] [DIR]
#   DIR defaults to $STREAMFX_WHIP_SERVER_ROOT, else ${XDG_CACHE_HOME:-~/.cache}/streamfx/simple-whip-server
#   (where tests/interop/janus_env.py looks); --check only says (exit status) whether it is there.
# Needs apt's package lists (apt-get update) and the Debian mirror; not root.
set -euo pipefail
check=false
[ "${1:-}" = --check ] && { check=true; shift; }
dest=${1:-${STREAMFX_WHIP_SERVER_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/streamfx/simple-whip-server}}
server=usr/share/simple-whip-server/src/server.js
if [ -f "$dest/$server" ]; then
  $check || echo "simple-whip-server already unpacked in $dest"
  exit 0
fi
$check && exit 1

# The dependency closure through node-*/libjs-* packages (the web demo's fonts and UI libraries
# are left out: only the REST API is used). nodejs and libnode* are never followed.
declare -A seen=([simple-whip-server]=1)
level=(simple-whip-server)
while [ ${#level[@]} -gt 0 ]; do
  next=()
  while read -r pkg dep; do
    case $dep in node-*|libjs-*) ;; *) continue ;; esac
    [ "$pkg" = simple-whip-server ] && [ "${dep#libjs-}" != "$dep" ] && continue
    [ -n "${seen[$dep]:-}" ] && continue
    seen[$dep]=1; next+=("$dep")
  done < <(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
             --no-replaces --no-enhances "${level[@]}" \
           | awk '/^[^ ]/ {pkg = $1; next}
                  /^ *\|?Depends: </ {virtual = 1; next}     # a virtual package: take its first provider
                  /^ *\|?Depends: / {virtual = 0; d = $NF; sub(/:any$/, "", d); print pkg, d; next}
                  virtual {virtual = 0; print pkg, $1}')
  level=("${next[@]}")
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q "${!seen[@]}" >/dev/null 2>&1) \
  || (cd "$tmp" && apt-get download "${!seen[@]}")   # again, to show apt's error
rm -rf "$dest.partial" && mkdir -p "$dest.partial"
for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$dest.partial"; done
rm -rf "$dest" && mv "$dest.partial" "$dest"
echo "unpacked ${#seen[@]} packages into $dest"
