# webhookd %postun ($1: 0 = erase, 1 = upgrade). State in /var/lib/webhookd
# and the webhookd user are kept on erase, as usual for RPM packages.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 0 ]; then
        # failed units stay loaded after their files are gone until reset
        systemctl reset-failed webhook.service webhook.socket webhook-admin.socket \
            'webhook-tunnel@*.service' >/dev/null 2>&1 || :
    fi
    if [ "$1" -ge 1 ]; then
        # Upgrade: restart a running daemon onto the new binary; the socket stays open.
        systemctl try-restart webhook.service >/dev/null 2>&1 || :
    fi
fi
