# %preun: stop and disable on removal ($1 is 0), not on upgrade.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
	systemctl disable --now mxisd.service >/dev/null 2>&1 || :
fi
exit 0
