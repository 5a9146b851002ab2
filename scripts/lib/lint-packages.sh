#!/usr/bin/env bash
# scripts/lib/lint-packages.sh DEB RPM — lintian on the .deb, rpmlint on the .rpm.
# Called by `scripts/package --lint` (and so by scripts/test). Installs lintian
# and rpmlint with apt when they are missing (as root). Fails on any error or
# warning that is not overridden; the overrides, each with its reason, are
# packaging/deb/lintian-overrides (shipped in the .deb, where lintian reads
# them) and packaging/rpm/rpmlint.toml. Prints one summary line per tool.
set -euo pipefail
deb=$1 rpm=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
log() { printf 'package: %s\n' "$*" >&2; }

need=()
command -v lintian >/dev/null 2>&1 || need+=(lintian)
command -v rpmlint >/dev/null 2>&1 || need+=(rpmlint)
command -v rpm >/dev/null 2>&1 || need+=(rpm)   # rpmlint unpacks with it
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "lint: missing ${need[*]} (run as root or install them)" >&2; exit 1; }
    log "apt-get install ${need[*]}"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi

rc=0
# lintian: E: errors, W: warnings, I: info (shown, not fatal), O: overridden
out=$(lintian --display-info --show-overrides --tag-display-limit 0 "$deb" 2>&1) || true
printf '%s\n' "$out" | sed 's/^/  lintian: /' >&2
e=$(grep -c '^E: ' <<<"$out" || true); w=$(grep -c '^W: ' <<<"$out" || true)
i=$(grep -c '^I: ' <<<"$out" || true); o=$(grep -c '^O: ' <<<"$out" || true)
echo "lintian $(basename "$deb"): $e errors, $w warnings, $i info, $o overridden" >&2
[ "$e" = 0 ] && [ "$w" = 0 ] || rc=1

# rpmlint: exits non-zero on errors; warnings are counted here
out=$(rpmlint -c "$root/packaging/rpm/rpmlint.toml" "$rpm" 2>&1) || true
printf '%s\n' "$out" | sed 's/^/  rpmlint: /' >&2
summary=$(grep -E '[0-9]+ packages and [0-9]+ specfiles checked' <<<"$out" | tail -n1)
e=$(sed -nE 's/.* ([0-9]+) errors.*/\1/p' <<<"$summary"); w=$(sed -nE 's/.* ([0-9]+) warnings.*/\1/p' <<<"$summary")
echo "rpmlint $(basename "$rpm"): ${e:-?} errors, ${w:-?} warnings" >&2
[ "${e:-x}" = 0 ] && [ "${w:-x}" = 0 ] || rc=1
exit $rc
