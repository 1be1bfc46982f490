# %postun: reload systemd after the unit file went away. The state in /var/lib/mxisd
# and the user stay (rpm has no purge); remove them by hand if wanted.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
