# webhookd %preun ($1: 0 = erase, 1 = upgrade). On erase: stop and disable the
# socket, the admin socket, any tunnel instance, and the daemon.
if [ "$1" -eq 0 ]; then
    tunnels=
    if [ -d /run/systemd/system ]; then
        tunnels=$(systemctl list-units --all --plain --no-legend 'webhook-tunnel@*.service' 2>/dev/null | awk '{ print $1 }')
    fi
    for link in /etc/systemd/system/*.wants/webhook-tunnel@*.service; do
        [ -e "$link" ] || [ -L "$link" ] || continue
        tunnels="$tunnels ${link##*/}"
    done
    if [ -d /run/systemd/system ]; then
        systemctl disable --now webhook.socket webhook-admin.socket $tunnels >/dev/null 2>&1 || :
        systemctl stop webhook.service >/dev/null 2>&1 || :
    else
        systemctl disable webhook.socket webhook-admin.socket $tunnels >/dev/null 2>&1 || :
    fi
fi
