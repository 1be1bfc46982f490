# %post: the state directory; enable and start on first install, restart on upgrade
# ($1 is 1 on install, 2 and more on upgrade), only when systemd is running.
install -d -o mxisd -g mxisd -m 0700 /var/lib/mxisd
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	if [ "$1" -eq 1 ]; then
		systemctl enable --now mxisd.service >/dev/null 2>&1 || :
	else
		systemctl try-restart mxisd.service >/dev/null 2>&1 || :
	fi
fi
exit 0
