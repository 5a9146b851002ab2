# scripts/lib/nspawn.sh — boot Debian 12 under systemd-nspawn for tests.
# Sourced by scripts/e2e-systemd and scripts/chaos (not executable on its own).
#
# What it provides (see shared/SYSTEMD-E2E.md for why each step is so):
#   nspawn_host_packages      apt-get the host tools that are missing
#   nspawn_rootfs             debootstrap once into $CACHE (a zstd tarball), unpack; sets BASE
#   nspawn_clean_leftovers    end what a SIGKILLed earlier run of the same PREFIX left behind
#   nspawn_boot ARTIFACTS     boot a throwaway overlay of BASE in its own cgroup, private network,
#                             ARTIFACTS bound read-only at /opt/artifacts; sets NSPAWN, P1, BOOT_STATE
#   nspawn_halt               halt the container, end anything left in its cgroups, remove them
#   ct CMD...                 run CMD inside the container (all namespaces, clean environment)
#   net CMD...                run a host CMD inside the container's network namespace only
#
# Callers set before sourcing: PREFIX (machine name prefix, e.g. webhookd-e2e),
# WORK (a work directory for the console log), and may set CACHE.
# They must define say() and die().

CACHE=${WEBHOOKD_E2E_CACHE:-${CACHE:-/var/cache/webhookd-e2e}}
NSPAWN_INCLUDES="systemd,systemd-sysv,dbus,curl,iproute2,procps,ca-certificates,python3,rpm,openssl"
MACHINE=$PREFIX-$BASHPID
CG_V1=/sys/fs/cgroup/systemd/$MACHINE
CG_V2=/sys/fs/cgroup/unified/$MACHINE
NSPAWN=
P1=
BASE=
BOOT_STATE=

nspawn_host_packages() {
    local need=() pair
    for pair in debootstrap:debootstrap systemd-nspawn:systemd-container zstd:zstd curl:curl \
                openssl:openssl python3:python3 nsenter:util-linux "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
    done
    if [ ${#need[@]} -gt 0 ]; then
        say "apt-get install ${need[*]}"
        apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2
    fi
}

nspawn_rootfs() {
    local key tarball mirror b u
    key=$(printf 'v1 bookworm %s' "$NSPAWN_INCLUDES" | sha256sum | cut -c1-12)
    tarball=$CACHE/rootfs-bookworm-$key.tar.zst
    mkdir -p "$CACHE"
    if [ ! -s "$tarball" ]; then
        say "building the Debian 12 rootfs (debootstrap, once; cached in $tarball)"
        mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
        mirror=${mirror:-http://deb.debian.org/debian}
        b=$(mktemp -d "$CACHE/build.XXXXXX")
        debootstrap --variant=minbase --include="$NSPAWN_INCLUDES" bookworm "$b/rootfs" "$mirror" >"$b/debootstrap.log" 2>&1 \
            || { tail -20 "$b/debootstrap.log" >&2; rm -rf "$b"; die "debootstrap failed"; }
        rm -f "$b"/rootfs/var/cache/apt/archives/*.deb
        rm -rf "$b"/rootfs/var/lib/apt/lists/*
        : >"$b/rootfs/etc/machine-id"   # a fresh id at each boot, no first-boot setup
        for u in getty@.service console-getty.service systemd-timesyncd.service apt-daily.timer \
                 apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer dpkg-db-backup.timer; do
            ln -sf /dev/null "$b/rootfs/etc/systemd/system/$u"
        done
        tar -C "$b/rootfs" --numeric-owner -cf - . | zstd -q -T0 -o "$tarball.tmp"
        mv "$tarball.tmp" "$tarball"
        rm -rf "$b"
    fi
    BASE=$CACHE/rootfs-bookworm-$key
    if [ ! -f "$BASE/.complete" ]; then
        say "unpacking the rootfs into $BASE"
        rm -rf "$BASE"; mkdir -p "$BASE"
        zstd -dc "$tarball" | tar -C "$BASE" --numeric-owner -xf -
        touch "$BASE/.complete"
    fi
}

nspawn_rm_cgroup() { # depth-first removal of a cgroup directory tree
    [ -d "$1" ] || return 0
    find "$1" -depth -type d -exec rmdir {} + 2>/dev/null || true
}

# A run that was SIGKILLed could not clean up: end what it left (its cgroups
# are named after its PID) before starting.
nspawn_clean_leftovers() {
    local d owner
    for d in /sys/fs/cgroup/unified/"$PREFIX"-* /sys/fs/cgroup/systemd/"$PREFIX"-*; do
        [ -d "$d" ] || continue
        owner=${d##*-}
        kill -0 "$owner" 2>/dev/null && continue
        say "removing leftovers of an earlier run: $d"
        find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
        sleep 0.5
        nspawn_rm_cgroup "$d"
    done
}

nspawn_halt() {
    local d
    if [ -n "$NSPAWN" ] && kill -0 "$NSPAWN" 2>/dev/null; then
        say "halting the container"
        kill -TERM "$NSPAWN" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$NSPAWN" 2>/dev/null; then
            say "container did not halt in 10 s: killing it"
            for d in "$CG_V2" "$CG_V1"; do
                [ -f "$d/cgroup.procs" ] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null
            done
            kill -KILL "$NSPAWN" 2>/dev/null
        fi
        wait "$NSPAWN" 2>/dev/null
    fi
    NSPAWN=
    for d in "$CG_V2" "$CG_V1"; do
        if [ -d "$d" ]; then
            # anything left in our cgroups is ours: end it, then remove the cgroups
            find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null
            sleep 0.2
            nspawn_rm_cgroup "$d"
        fi
    done
}

# nspawn_boot ARTIFACTS_DIR: returns 0 when the system is running (or degraded).
nspawn_boot() {
    local artifacts=$1 host_pidns state=
    mkdir -p "$CG_V1" "$CG_V2"
    (
        echo "$BASHPID" >"$CG_V1/cgroup.procs"
        echo "$BASHPID" >"$CG_V2/cgroup.procs"
        SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 exec systemd-nspawn --boot --register=no --keep-unit \
            --machine="$MACHINE" -D "$BASE" --volatile=overlay --private-network \
            --bind-ro="$artifacts:/opt/artifacts" </dev/null >"$WORK/console.log" 2>&1
    ) &
    NSPAWN=$!
    # The container's PID 1 is the nspawn child that lives in a new PID namespace
    # (an intermediate child exists briefly before it: don't enter that one).
    host_pidns=$(readlink /proc/self/ns/pid)
    for _ in $(seq 1 200); do
        P1=$(awk '{ print $1 }' "/proc/$NSPAWN/task/$NSPAWN/children" 2>/dev/null || true)
        if [ -n "$P1" ] && [ "$(readlink "/proc/$P1/ns/pid" 2>/dev/null)" != "$host_pidns" ] \
            && [ -n "$(readlink "/proc/$P1/ns/pid" 2>/dev/null)" ]; then
            break
        fi
        P1=
        sleep 0.05
    done
    if [ -z "$P1" ]; then
        cat "$WORK/console.log" >&2
        BOOT_STATE="systemd-nspawn did not start"
        return 1
    fi
    for _ in $(seq 1 300); do   # PID 1 needs a moment before its bus socket exists
        state=$(ct timeout 60 systemctl is-system-running --wait 2>&1 || true)
        case $state in *"Failed to connect"*|*"No such file"*|offline|"") sleep 0.2 ;; *) break ;; esac
    done
    BOOT_STATE=$state
    if [ "$state" = running ] || [ "$state" = degraded ]; then
        [ "$state" = degraded ] && ct systemctl --failed --no-legend >&2
        return 0
    fi
    cat "$WORK/console.log" >&2
    return 1
}

ct() { nsenter -t "$P1" -m -u -i -n -p -C -r -w env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
# host tools (curl, openssl, python3) inside the container's network namespace
net() { nsenter -t "$P1" -n "$@"; }
