"""Synapse password auth module backed by mxisd's ``check_credentials`` endpoint.

Synapse calls :meth:`MxisdPasswordProvider.check_password` for every
``m.login.password`` login (and for password re-authentication). The module posts the
user's Matrix ID and password to mxisd, which checks them against the directory
(LDAP, SQL, REST...). It speaks the same contract as the REST password provider that
mxisd and ma1sd used (``POST /_matrix-internal/identity/v1/check_credentials``).

On success the user is created in Synapse if they do not exist yet (a password login
never creates users by itself), and the directory's display name and 3PIDs are applied.
Every failure, including mxisd being down or slow, refuses the login ("fail closed"); a
failure while applying the profile never does.

Configuration (``homeserver.yaml``)::

    modules:
      - module: mxisd_synapse.MxisdPasswordProvider
        config:
          endpoint: http://127.0.0.1:8092   # mxisd's check_credentials listener
          timeout: 10                       # seconds
          update_profile: true              # display name on every login
          update_threepids: true            # add the directory's e-mails and phone numbers
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Tuple
from urllib.parse import urlsplit

__version__ = "0.1.0"

__all__ = ["MxisdConfig", "MxisdPasswordProvider", "CHECK_CREDENTIALS_PATH"]

logger = logging.getLogger(__name__)

CHECK_CREDENTIALS_PATH = "/_matrix-internal/identity/v1/check_credentials"
DEFAULT_TIMEOUT = 10.0
# Synapse's own HTTP client gives up after 60 s; a longer timeout would never apply.
MAX_TIMEOUT = 60.0
# Synapse refuses longer display names (MAX_DISPLAYNAME_LEN).
MAX_DISPLAYNAME_LEN = 256
# A Matrix ID is at most 255 bytes.
MAX_MXID_LEN = 255
THREEPID_MEDIA = ("email", "msisdn")
KNOWN_KEYS = ("endpoint", "timeout", "update_profile", "update_threepids")

try:  # Synapse's own ConfigError gives the admin a message naming the module.
    from synapse.module_api.errors import ConfigError
except ImportError:  # outside Synapse (the unit tests)

    class ConfigError(Exception):  # type: ignore[no-redef]
        """Raised by parse_config on a bad configuration."""


class MxisdConfig:
    """The validated module configuration."""

    def __init__(
        self,
        endpoint: str,
        timeout: float = DEFAULT_TIMEOUT,
        update_profile: bool = True,
        update_threepids: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.update_profile = update_profile
        self.update_threepids = update_threepids

    def __repr__(self) -> str:
        return (
            f"MxisdConfig(endpoint={self.endpoint!r}, timeout={self.timeout!r}, "
            f"update_profile={self.update_profile!r}, "
            f"update_threepids={self.update_threepids!r})"
        )


def _parse_bool(config: Dict[str, Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"mxisd_synapse: '{key}' must be true or false, not {value!r}")
    return value


def _is_valid_localpart(localpart: str) -> bool:
    # Historical user IDs allow any printable ASCII but ':'; Synapse decides the rest.
    return bool(localpart) and all(0x21 <= ord(c) <= 0x7E and c != ":" for c in localpart)


def _redact(text: str, secret: str) -> str:
    if secret and secret in text:
        text = text.replace(secret, "<redacted>")
    return text[:300]


def _describe(exc: BaseException, secret: str) -> str:
    text = str(exc)
    name = type(exc).__name__
    return _redact(f"{name}: {text}" if text else name, secret)


def _run_with_asyncio_timeout(
    make: Callable[[], Awaitable[Any]], timeout: float
) -> Awaitable[Any]:
    return asyncio.wait_for(make(), timeout)


def _timeout_runner() -> Callable[[Callable[[], Awaitable[Any]], float], Awaitable[Any]]:
    """How to await an HTTP call with a deadline.

    Inside Synapse the code runs on the Twisted reactor, where asyncio.wait_for does not
    work: the call becomes a Deferred (run_in_background keeps Synapse's log contexts
    right), Deferred.addTimeout cancels it at the deadline (which aborts the request),
    and make_deferred_yieldable awaits it. Outside Synapse (the unit tests), asyncio.
    """
    try:
        from synapse.module_api import make_deferred_yieldable, run_in_background
        from twisted.internet import reactor
    except ImportError:
        return _run_with_asyncio_timeout

    def run(make: Callable[[], Awaitable[Any]], timeout: float) -> Awaitable[Any]:
        deferred = run_in_background(make)
        deferred.addTimeout(timeout, reactor)
        return make_deferred_yieldable(deferred)

    return run


def _user_id_object(mxid: str) -> Any:
    """What ModuleApi.set_displayname takes: a synapse.types.UserID, not a str."""
    try:
        from synapse.module_api import UserID
    except ImportError:
        return mxid
    return UserID.from_string(mxid)


class MxisdPasswordProvider:
    """Checks ``m.login.password`` logins against mxisd (see the module docstring)."""

    def __init__(self, config: MxisdConfig, api: Any) -> None:
        if isinstance(config, dict):  # parse_config was bypassed (old loaders)
            config = self.parse_config(config)
        self._config = config
        self._api = api
        self._url = config.endpoint + CHECK_CREDENTIALS_PATH
        self._run = _timeout_runner()
        self._warned_no_threepid_call = False
        api.register_password_auth_provider_callbacks(
            auth_checkers={("m.login.password", ("password",)): self.check_password},
        )

    @staticmethod
    def parse_config(config: Any) -> MxisdConfig:
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise ConfigError("mxisd_synapse: 'config' must be a mapping")

        endpoint = config.get("endpoint")
        if not isinstance(endpoint, str) or not endpoint.strip():
            raise ConfigError(
                "mxisd_synapse: 'endpoint' is required: the base URL of mxisd's "
                "check_credentials listener, e.g. http://127.0.0.1:8092"
            )
        endpoint = endpoint.strip().rstrip("/")
        # Accept the full URL as well as the base URL.
        if endpoint.endswith(CHECK_CREDENTIALS_PATH):
            endpoint = endpoint[: -len(CHECK_CREDENTIALS_PATH)].rstrip("/")
        try:
            parts = urlsplit(endpoint)
            parts.port  # raises ValueError on a bad port
        except ValueError as e:
            raise ConfigError(f"mxisd_synapse: 'endpoint' {endpoint!r} is not a URL: {e}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"mxisd_synapse: 'endpoint' {endpoint!r} must be an http:// or https:// URL"
            )
        if parts.query or parts.fragment:
            raise ConfigError(
                f"mxisd_synapse: 'endpoint' {endpoint!r} must not have a query or fragment"
            )

        timeout = config.get("timeout", DEFAULT_TIMEOUT)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout <= MAX_TIMEOUT
        ):
            raise ConfigError(
                f"mxisd_synapse: 'timeout' must be a number of seconds above 0 and at "
                f"most {MAX_TIMEOUT:g}, not {timeout!r}"
            )

        unknown = sorted(str(k) for k in config if k not in KNOWN_KEYS)
        if unknown:
            # Not fatal: a configuration carried over from the old REST provider (its
            # 'policy' block) must not stop Synapse from starting.
            logger.warning("ignoring unknown config keys: %s", ", ".join(unknown))

        return MxisdConfig(
            endpoint=endpoint,
            timeout=float(timeout),
            update_profile=_parse_bool(config, "update_profile", True),
            update_threepids=_parse_bool(config, "update_threepids", True),
        )

    # ---------------------------------------------------------------------------------
    # The auth checker

    async def check_password(
        self, username: str, login_type: str, login_dict: Dict[str, Any]
    ) -> Optional[Tuple[str, None]]:
        """Synapse's auth checker: ``(mxid, None)`` if mxisd accepts the password."""
        if login_type != "m.login.password" or not isinstance(login_dict, dict):
            return None
        password = login_dict.get("password")
        if not isinstance(password, str) or not password:
            return None
        localpart = self._local_localpart(username)
        if localpart is None:
            return None
        mxid = f"@{localpart}:{self._api.server_name}"

        auth = await self._check_credentials(mxid, password)
        if auth is None:
            return None
        if auth.get("success") is not True:
            logger.info("mxisd refused the password of %s", mxid)
            return None

        # ma1sd never sends auth.mxid; the kamax provider's README documents it. Honour
        # it when it names a user of this server, refuse the login when it does not.
        returned = auth.get("mxid")
        if returned is not None:
            other = self._local_localpart(returned) if isinstance(returned, str) else None
            if other is None or not returned.startswith("@"):
                logger.warning(
                    "mxisd accepted %s but named the user %r, which is not "
                    "a user of this server; refusing the login",
                    mxid,
                    returned,
                )
                return None
            localpart, mxid = other, f"@{other}:{self._api.server_name}"

        display_name = self._display_name(auth)
        ensured = await self._ensure_user(localpart, mxid, display_name)
        if ensured is None:
            return None
        user_id, created = ensured
        await self._apply_profile(user_id, created, display_name, self._threepids(auth))
        return user_id, None

    def _local_localpart(self, username: Any) -> Optional[str]:
        """The lowercased localpart of a localpart or full MXID of this server."""
        if not isinstance(username, str):
            return None
        server_name = self._api.server_name
        if username.startswith("@"):
            localpart, sep, domain = username[1:].partition(":")
            if not sep or domain.lower() != server_name.lower():
                logger.info(
                    "%r is not a user of %s; not asking mxisd",
                    username,
                    server_name,
                )
                return None
        else:
            localpart = username
        # Synapse only registers lowercase localparts; check_user_exists is
        # case-insensitive, so existing mixed-case users still find their account.
        localpart = localpart.lower()
        if not _is_valid_localpart(localpart):
            logger.info("%r is not a valid user name; not asking mxisd", username)
            return None
        if len(f"@{localpart}:{server_name}".encode()) > MAX_MXID_LEN:
            return None
        return localpart

    async def _check_credentials(self, mxid: str, password: str) -> Optional[Dict[str, Any]]:
        """mxisd's ``auth`` object, or None (logged) when there is no usable answer."""
        body = {"user": {"id": mxid, "password": password}}
        timeout = self._config.timeout
        try:
            reply = await self._run(
                lambda: self._api.http_client.post_json_get_json(self._url, body), timeout
            )
        except Exception as e:
            # A timeout (asyncio's, or Twisted's defer.TimeoutError), connection refused,
            # HTTP errors (non-2xx), a body that is not JSON...: the login fails.
            timed_out = isinstance(e, (asyncio.TimeoutError, TimeoutError))
            if timed_out or type(e).__name__ == "TimeoutError":
                logger.warning(
                    "%s did not answer within %g s for %s; refusing the login",
                    self._url,
                    timeout,
                    mxid,
                )
                return None
            logger.warning(
                "checking the password of %s at %s failed; refusing the "
                "login: %s",
                mxid,
                self._url,
                _describe(e, password),
            )
            return None
        if not isinstance(reply, dict) or not isinstance(reply.get("auth"), dict):
            logger.warning(
                "%s answered without an 'auth' object for %s; refusing the login",
                self._url,
                mxid,
            )
            return None
        return reply["auth"]

    # ---------------------------------------------------------------------------------
    # What mxisd returns, read defensively: any field may be missing, null or of
    # another type (the old provider crashed on some of these).

    @staticmethod
    def _display_name(auth: Dict[str, Any]) -> Optional[str]:
        profile = auth.get("profile")
        candidates = [profile.get("display_name") if isinstance(profile, dict) else None]
        candidates.append(auth.get("display_name"))  # the legacy top-level copy
        for candidate in candidates:
            if isinstance(candidate, str) and candidate.strip():
                return candidate.strip()[:MAX_DISPLAYNAME_LEN]
        return None

    @staticmethod
    def _threepids(auth: Dict[str, Any]) -> List[Tuple[str, str]]:
        profile = auth.get("profile")
        items = profile.get("three_pids") if isinstance(profile, dict) else None
        if not isinstance(items, list):
            return []
        result: List[Tuple[str, str]] = []
        for item in items:
            if not isinstance(item, dict):
                continue
            medium, address = item.get("medium"), item.get("address")
            if not isinstance(medium, str) or not isinstance(address, str):
                continue
            key = _normalise_threepid(medium, address)
            if key is not None and key not in result:
                result.append(key)
        return result

    # ---------------------------------------------------------------------------------
    # Synapse side

    async def _ensure_user(
        self, localpart: str, mxid: str, display_name: Optional[str]
    ) -> Optional[Tuple[str, bool]]:
        """(canonical user ID, created now), creating the user on their first login.

        Password logins never create users in Synapse: the module must. The REST provider
        of mxisd/ma1sd did the same, so directory users can log in without having
        registered first.
        """
        try:
            existing = await self._api.check_user_exists(mxid)
        except Exception as e:
            logger.warning("could not look %s up; refusing the login: %s", mxid, _describe(e, ""))
            return None
        if existing:
            return existing, False
        try:
            user_id = await self._api.register_user(localpart, displayname=display_name)
        except Exception as e:
            # A concurrent login may have created the user in the meantime.
            try:
                existing = await self._api.check_user_exists(mxid)
            except Exception:
                existing = None
            if existing:
                return existing, False
            logger.warning(
                "mxisd accepted %s, but Synapse could not create the user; "
                "refusing the login: %s",
                mxid,
                _describe(e, ""),
            )
            return None
        logger.info("created %s on its first login", user_id)
        return user_id, True

    async def _apply_profile(
        self,
        user_id: str,
        created: bool,
        display_name: Optional[str],
        threepids: List[Tuple[str, str]],
    ) -> None:
        """Display name and 3PIDs from the directory; never fails the login.

        A user created now already got the display name from register_user.
        """
        if self._config.update_profile and display_name is not None and not created:
            try:
                await self._set_display_name(user_id, display_name)
            except Exception as e:
                logger.warning(
                    "could not set the display name of %s: %s",
                    user_id,
                    _describe(e, ""),
                )
        if self._config.update_threepids and threepids:
            try:
                await self._add_threepids(user_id, threepids)
            except Exception as e:
                logger.warning(
                    "could not update the 3PIDs of %s: %s", user_id, _describe(e, "")
                )

    async def _set_display_name(self, user_id: str, display_name: str) -> None:
        localpart = user_id[1:].partition(":")[0]
        try:
            current = await self._api.get_profile_for_user(localpart)
            current_name = getattr(current, "display_name", None)
        except Exception:
            current_name = None  # unknown: set it
        if current_name == display_name:
            return  # setting it re-sends the user's membership to every joined room
        set_displayname = getattr(self._api, "set_displayname", None)
        if set_displayname is None:
            logger.warning(
                "this Synapse has no ModuleApi.set_displayname (added in "
                "1.76); display names are only set when users are created"
            )
            return
        await set_displayname(_user_id_object(user_id), display_name)
        logger.info("display name of %s set from the directory", user_id)

    async def _add_threepids(self, user_id: str, threepids: List[Tuple[str, str]]) -> None:
        existing: Set[Tuple[str, str]] = set()
        for row in await self._api.get_threepids_for_user(user_id) or []:
            if isinstance(row, dict):
                key = _normalise_threepid(str(row.get("medium")), str(row.get("address")))
                if key is not None:
                    existing.add(key)
        missing = [t for t in threepids if t not in existing]
        if not missing:
            return
        add = self._threepid_adder()
        if add is None:
            return
        now_ms = int(time.time() * 1000)
        for medium, address in missing:
            try:
                await add(user_id, medium, address, now_ms)
                logger.info("added %s %s to %s", medium, address, user_id)
            except Exception as e:
                # Typically the address already belongs to another account.
                logger.warning(
                    "could not add %s %s to %s: %s",
                    medium,
                    address,
                    user_id,
                    _describe(e, ""),
                )

    def _threepid_adder(self) -> Optional[Callable[..., Awaitable[Any]]]:
        """Synapse's AuthHandler.add_threepid, reached through private attributes.

        The module API has no call to add a 3PID to an existing user (register_user's
        ``emails`` only applies at creation and would fail the creation on a taken
        address). This is the call Synapse itself uses when a user adds an address;
        it is not a stable API, so it is looked up defensively every time.
        """
        hs = getattr(self._api, "_hs", None)
        get_auth_handler = getattr(hs, "get_auth_handler", None)
        add = None
        if callable(get_auth_handler):
            try:
                add = getattr(get_auth_handler(), "add_threepid", None)
            except Exception:
                add = None
        if not callable(add):
            if not self._warned_no_threepid_call:
                logger.warning(
                    "this Synapse offers no way to add 3PIDs "
                    "(ModuleApi._hs.get_auth_handler().add_threepid is missing); "
                    "the directory's e-mail addresses and phone numbers are not copied "
                    "(set update_threepids: false to silence this)"
                )
                self._warned_no_threepid_call = True
            return None
        return add


def _normalise_threepid(medium: str, address: str) -> Optional[Tuple[str, str]]:
    """(medium, address) as Synapse stores it, or None for what it cannot store."""
    medium = medium.strip().lower()
    address = address.strip()
    if medium not in THREEPID_MEDIA or not address:
        return None
    if medium == "email":
        address = address.lower()  # Synapse lowercases e-mail addresses
    else:
        address = "".join(address.split()).lstrip("+")  # msisdn: digits, no '+'
    return (medium, address) if address else None
