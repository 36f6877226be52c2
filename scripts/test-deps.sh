#!/usr/bin/env bash
# Installs the system tools meshguard's tests use, on Debian, when they are missing.
# Idempotent and silent when everything is already there.
set -euo pipefail

need=()
command -v ip >/dev/null 2>&1       || need+=(iproute2)
command -v nft >/dev/null 2>&1      || need+=(nftables)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v tcpdump >/dev/null 2>&1  || need+=(tcpdump)

[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: missing ${need[*]}; tests that need them will skip (install as root with apt-get)" >&2
  exit 0
fi
echo "test-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
