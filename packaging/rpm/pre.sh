# %pre: the system user and group, before the files owned by group mxisd land.
getent group mxisd >/dev/null || groupadd --system mxisd
getent passwd mxisd >/dev/null || useradd --system --gid mxisd --home-dir /var/lib/mxisd \
	--no-create-home --shell /sbin/nologin --comment "mxisd Matrix identity server" mxisd
exit 0
