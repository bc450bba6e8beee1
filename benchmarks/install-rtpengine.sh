#!/usr/bin/env bash
# Installs Debian's rtpengine-daemon for the `mediarelay bench --against rtpengine`
# comparison without letting the package start its own service: the benchmark
# starts its own userspace-only instance on loopback. Idempotent; run as root.
set -euo pipefail
if command -v rtpengine >/dev/null 2>&1; then
	exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d exit 101 tells invoke-rc.d "action forbidden": the package
# installs but its rtpengine service is not started. Restore any prior policy.
policy=/usr/sbin/policy-rc.d
backup=""
if [ -e "$policy" ]; then
	backup="$(mktemp)"
	$SUDO cp -p "$policy" "$backup"
fi
restore() {
	if [ -n "$backup" ]; then $SUDO mv "$backup" "$policy"; else $SUDO rm -f "$policy"; fi
}
trap restore EXIT
printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
$SUDO chmod 755 "$policy"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends rtpengine-daemon </dev/null
