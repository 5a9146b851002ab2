# webhookd %post ($1: 1 = first install, 2 = upgrade). cargo-generate-rpm has
# no systemd macros, so this does by hand what %systemd_post and %sysusers would.
systemd-sysusers /usr/lib/sysusers.d/webhookd.conf >/dev/null 2>&1 || :
systemd-tmpfiles --create /usr/lib/tmpfiles.d/webhookd.conf >/dev/null 2>&1 || :
chmod 0600 /etc/webhookd/tunnel.env 2>/dev/null || :
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    # an install is the fix for units that failed (refused downgrade, start limit hit)
    systemctl reset-failed webhook.service webhook.socket >/dev/null 2>&1 || :
    if [ "$1" -ge 2 ] && systemctl --quiet is-enabled webhook.socket 2>/dev/null; then
        systemctl start webhook.socket >/dev/null 2>&1 || :
    fi
fi
if [ "$1" -eq 1 ]; then
    # Enable the socket (works without a running systemd too; its Also=
    # enables webhook-admin.socket, the loopback socket of /status and
    # /metrics) and start both.
    systemctl enable webhook.socket >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl start webhook.socket webhook-admin.socket >/dev/null 2>&1 || :
    fi
fi
