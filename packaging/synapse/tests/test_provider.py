"""Tests of mxisd_synapse.MxisdPasswordProvider without Synapse.

A fake ModuleApi stands in for Synapse; its http_client really POSTs (urllib, in a
thread) to a stand-in check_credentials server on 127.0.0.1, which records requests.

Run from the repository root:
    python3 -m unittest discover -s packaging/synapse/tests -v
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import threading
import time
import types
import unittest
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mxisd_synapse  # noqa: E402
from mxisd_synapse import CHECK_CREDENTIALS_PATH, ConfigError, MxisdPasswordProvider  # noqa: E402

SERVER_NAME = "example.org"
PASSWORD = "s3cret-Pa55"
JOHN_PROFILE = {
    "display_name": "John Doe",
    "three_pids": [
        {"medium": "email", "address": "John.Doe@Example.org"},
        {"medium": "msisdn", "address": "+33612345678"},
        {"medium": "kmx.employee.id", "address": "1234"},  # not storable in Synapse
    ],
}


# --- a stand-in for Synapse's synapse.module_api.UserID -----------------------------


class UserID:
    def __init__(self, localpart: str, domain: str) -> None:
        self.localpart = localpart
        self.domain = domain

    @classmethod
    def from_string(cls, s: str) -> "UserID":
        if not s.startswith("@") or ":" not in s:
            raise ValueError(f"not a user ID: {s!r}")
        localpart, _, domain = s[1:].partition(":")
        return cls(localpart, domain)

    def to_string(self) -> str:
        return f"@{self.localpart}:{self.domain}"


_saved_modules: Dict[str, Any] = {}


def setUpModule() -> None:
    # The provider imports UserID from synapse.module_api when it sets a display name.
    # Nothing else is in this fake, so the provider times requests out with asyncio.
    for name in ("synapse", "synapse.module_api"):
        _saved_modules[name] = sys.modules.get(name)
    synapse = types.ModuleType("synapse")
    module_api = types.ModuleType("synapse.module_api")
    module_api.UserID = UserID  # type: ignore[attr-defined]
    synapse.module_api = module_api  # type: ignore[attr-defined]
    sys.modules["synapse"] = synapse
    sys.modules["synapse.module_api"] = module_api


def tearDownModule() -> None:
    for name, module in _saved_modules.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


# --- the stand-in check_credentials server ------------------------------------------


class StandIn:
    """check_credentials on 127.0.0.1: john / PASSWORD succeeds, anything else fails.

    `respond` may be replaced by a test: body -> (status, bytes).
    """

    def __init__(self) -> None:
        self.requests: List[Tuple[str, str, Any]] = []
        self.respond: Callable[[Any], Tuple[int, bytes]] = self.default_respond
        self.delay = 0.0
        self.release = threading.Event()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw
                stand_in.requests.append((self.path, self.headers.get("Content-Type"), body))
                if stand_in.delay:
                    stand_in.release.wait(stand_in.delay)
                if self.path != CHECK_CREDENTIALS_PATH:
                    status, payload = 404, b'{"errcode":"M_UNRECOGNIZED"}'
                else:
                    status, payload = stand_in.respond(body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def default_respond(body: Any) -> Tuple[int, bytes]:
        user = body.get("user", {}) if isinstance(body, dict) else {}
        if user.get("id") == f"@john:{SERVER_NAME}" and user.get("password") == PASSWORD:
            auth = {"success": True, "display_name": "John Doe", "profile": JOHN_PROFILE}
        else:
            auth = {"success": False, "profile": {"three_pids": []}}
        return 200, json.dumps({"auth": auth}).encode()

    def reply_with(self, status: int, payload: Any) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.respond = lambda body: (status, data)

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


# --- the fake ModuleApi ---------------------------------------------------------------


class HttpResponseException(Exception):
    """Like synapse.api.errors.HttpResponseException: raised on a non-2xx answer."""

    def __init__(self, code: int, msg: str, response: bytes) -> None:
        super().__init__(f"{code}: {msg}: {response.decode('utf-8', 'replace')}")
        self.code = code
        self.msg = msg
        self.response = response


class FakeHttpClient:
    """post_json_get_json as Synapse's SimpleHttpClient behaves: JSON in, JSON out,
    HttpResponseException on non-2xx, ValueError on a body that is not JSON."""

    def __init__(self) -> None:
        # No proxy from the environment: the stand-in is on 127.0.0.1.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.calls = 0

    async def post_json_get_json(self, uri: str, post_json: Any, headers: Any = None) -> Any:
        self.calls += 1
        data = json.dumps(post_json).encode()

        def post() -> Any:
            request = urllib.request.Request(
                uri, data=data, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with self._opener.open(request, timeout=30) as response:
                    raw = response.read()
            except urllib.error.HTTPError as e:
                raise HttpResponseException(e.code, str(e.reason), e.read()) from None
            return json.loads(raw)

        return await asyncio.to_thread(post)


class FakeAuthHandler:
    def __init__(self, api: "FakeModuleApi") -> None:
        self.api = api

    async def add_threepid(self, user_id: str, medium: str, address: str, validated_at: int) -> None:
        assert isinstance(validated_at, int)
        for owner, user in self.api.users.items():
            if (medium, address) in user["threepids"]:
                raise RuntimeError(f"IntegrityError: ({medium}, {address}) belongs to {owner}")
        self.api.users[user_id]["threepids"].append((medium, address))


class FakeHs:
    def __init__(self, api: "FakeModuleApi") -> None:
        self._auth_handler = FakeAuthHandler(api)

    def get_auth_handler(self) -> FakeAuthHandler:
        return self._auth_handler


class FakeModuleApi:
    server_name = SERVER_NAME

    def __init__(self) -> None:
        self.http_client = FakeHttpClient()
        self._hs: Optional[FakeHs] = FakeHs(self)
        self.auth_checkers: Optional[Dict[Any, Any]] = None
        # mxid -> {"displayname": str, "threepids": [(medium, address)]}
        self.users: Dict[str, Dict[str, Any]] = {}
        self.registered: List[Tuple[str, Optional[str]]] = []
        self.displayname_calls: List[Tuple[str, str]] = []
        self.fail_set_displayname = False

    def register_password_auth_provider_callbacks(self, *, auth_checkers: Any = None, **kwargs: Any) -> None:
        self.auth_checkers = auth_checkers

    def add_user(self, mxid: str, displayname: str, threepids: Optional[List[Tuple[str, str]]] = None) -> None:
        self.users[mxid] = {"displayname": displayname, "threepids": list(threepids or [])}

    async def check_user_exists(self, user_id: str) -> Optional[str]:
        for mxid in self.users:
            if mxid.lower() == user_id.lower():
                return mxid
        return None

    async def register_user(
        self, localpart: str, displayname: Optional[str] = None, emails: Any = None, admin: bool = False
    ) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyz0123456789=_-./+")
        if not localpart or localpart.startswith("_") or not set(localpart) <= allowed:
            raise RuntimeError("M_INVALID_USERNAME")
        mxid = f"@{localpart}:{self.server_name}"
        if mxid in self.users:
            raise RuntimeError("M_USER_IN_USE")
        self.registered.append((localpart, displayname))
        self.add_user(mxid, displayname if displayname is not None else localpart)
        return mxid

    async def get_profile_for_user(self, localpart: str) -> Any:
        user = self.users[f"@{localpart}:{self.server_name}"]
        return types.SimpleNamespace(display_name=user["displayname"], avatar_url=None)

    async def set_displayname(self, user_id: Any, new_displayname: str, deactivation: bool = False) -> None:
        if not isinstance(user_id, UserID):
            raise TypeError("set_displayname takes a UserID")
        if self.fail_set_displayname:
            raise RuntimeError("M_FORBIDDEN")
        mxid = user_id.to_string()
        self.displayname_calls.append((mxid, new_displayname))
        self.users[mxid]["displayname"] = new_displayname

    async def get_threepids_for_user(self, user_id: str) -> List[Dict[str, Any]]:
        return [
            {"medium": m, "address": a, "validated_at": 0, "added_at": 0}
            for m, a in self.users[user_id]["threepids"]
        ]


# --- the tests --------------------------------------------------------------------------


class ParseConfigTest(unittest.TestCase):
    def test_defaults(self) -> None:
        config = MxisdPasswordProvider.parse_config({"endpoint": "http://127.0.0.1:8092/"})
        self.assertEqual(config.endpoint, "http://127.0.0.1:8092")
        self.assertEqual(config.timeout, 10.0)
        self.assertTrue(config.update_profile)
        self.assertTrue(config.update_threepids)

    def test_values(self) -> None:
        config = MxisdPasswordProvider.parse_config(
            {
                "endpoint": "https://idp.example.org:8443/mxisd" + CHECK_CREDENTIALS_PATH,
                "timeout": 2.5,
                "update_profile": False,
                "update_threepids": False,
            }
        )
        self.assertEqual(config.endpoint, "https://idp.example.org:8443/mxisd")
        self.assertEqual(config.timeout, 2.5)
        self.assertFalse(config.update_profile)
        self.assertFalse(config.update_threepids)

    def test_bad_values(self) -> None:
        for bad in (
            {},
            {"endpoint": ""},
            {"endpoint": 8092},
            {"endpoint": "127.0.0.1:8092"},
            {"endpoint": "ftp://127.0.0.1"},
            {"endpoint": "http://127.0.0.1:notaport"},
            {"endpoint": "http://127.0.0.1:8092?x=1"},
            {"endpoint": "http://127.0.0.1:8092", "timeout": 0},
            {"endpoint": "http://127.0.0.1:8092", "timeout": -1},
            {"endpoint": "http://127.0.0.1:8092", "timeout": 61},
            {"endpoint": "http://127.0.0.1:8092", "timeout": "10"},
            {"endpoint": "http://127.0.0.1:8092", "timeout": True},
            {"endpoint": "http://127.0.0.1:8092", "update_profile": "yes"},
            {"endpoint": "http://127.0.0.1:8092", "update_threepids": 1},
        ):
            with self.subTest(config=bad), self.assertRaises(ConfigError):
                MxisdPasswordProvider.parse_config(bad)
        with self.assertRaises(ConfigError):
            MxisdPasswordProvider.parse_config(["endpoint"])

    def test_unknown_keys_warn(self) -> None:
        with self.assertLogs("mxisd_synapse", level="WARNING") as logs:
            MxisdPasswordProvider.parse_config({"endpoint": "http://127.0.0.1:8092", "policy": {}})
        self.assertIn("policy", "\n".join(logs.output))


class ProviderTest(unittest.IsolatedAsyncioTestCase):
    def setUp(self) -> None:
        self.stand_in = StandIn()
        self.addCleanup(self.stand_in.close)
        self.api = FakeModuleApi()
        self.provider = self.make_provider()

    def make_provider(self, **config: Any) -> MxisdPasswordProvider:
        raw = {"endpoint": self.stand_in.endpoint, **config}
        return MxisdPasswordProvider(MxisdPasswordProvider.parse_config(raw), self.api)

    async def login(self, username: str, password: Any = PASSWORD, provider: Any = None) -> Any:
        provider = provider or self.provider
        return await provider.check_password(username, "m.login.password", {"password": password})

    def sent_ids(self) -> List[str]:
        return [body["user"]["id"] for _, _, body in self.stand_in.requests]

    def test_registers_the_password_checker(self) -> None:
        self.assertEqual(list(self.api.auth_checkers), [("m.login.password", ("password",))])
        self.assertEqual(self.api.auth_checkers[("m.login.password", ("password",))], self.provider.check_password)

    async def test_right_password_from_localpart_creates_the_user(self) -> None:
        result = await self.login("John")
        self.assertEqual(result, ("@john:example.org", None))
        self.assertEqual(
            self.stand_in.requests,
            [
                (
                    CHECK_CREDENTIALS_PATH,
                    "application/json",
                    {"user": {"id": "@john:example.org", "password": PASSWORD}},
                )
            ],
        )
        # Created with the directory's display name, so no separate set_displayname.
        self.assertEqual(self.api.registered, [("john", "John Doe")])
        self.assertEqual(self.api.displayname_calls, [])
        self.assertEqual(
            self.api.users["@john:example.org"]["threepids"],
            [("email", "john.doe@example.org"), ("msisdn", "33612345678")],
        )

    async def test_right_password_from_full_mxid_updates_the_profile(self) -> None:
        self.api.add_user("@john:example.org", "old name", [("email", "john.doe@example.org")])
        result = await self.login("@john:Example.org")
        self.assertEqual(result, ("@john:example.org", None))
        self.assertEqual(self.sent_ids(), ["@john:example.org"])
        self.assertEqual(self.api.registered, [])
        self.assertEqual(self.api.displayname_calls, [("@john:example.org", "John Doe")])
        self.assertEqual(
            self.api.users["@john:example.org"]["threepids"],
            [("email", "john.doe@example.org"), ("msisdn", "33612345678")],
        )
        # A second login changes nothing: the name is the same, the 3PIDs are there.
        self.assertEqual(await self.login("@john:example.org"), ("@john:example.org", None))
        self.assertEqual(len(self.api.displayname_calls), 1)
        self.assertEqual(len(self.api.users["@john:example.org"]["threepids"]), 2)

    async def test_existing_mixed_case_user_keeps_its_canonical_id(self) -> None:
        self.api.add_user("@John:example.org", "John Doe")
        self.assertEqual(await self.login("JOHN"), ("@John:example.org", None))
        self.assertEqual(self.sent_ids(), ["@john:example.org"])

    async def test_profile_updates_can_be_turned_off(self) -> None:
        provider = self.make_provider(update_profile=False, update_threepids=False)
        self.api.add_user("@john:example.org", "old name")
        self.assertEqual(await self.login("john", provider=provider), ("@john:example.org", None))
        self.assertEqual(self.api.displayname_calls, [])
        self.assertEqual(self.api.users["@john:example.org"]["displayname"], "old name")
        self.assertEqual(self.api.users["@john:example.org"]["threepids"], [])

    async def test_wrong_password(self) -> None:
        with self.assertNoLogs("mxisd_synapse", level="WARNING"):
            self.assertIsNone(await self.login("john", "wrong"))
        self.assertEqual(self.sent_ids(), ["@john:example.org"])
        self.assertEqual(self.api.users, {})

    async def test_empty_or_missing_password_sends_nothing(self) -> None:
        self.assertIsNone(await self.login("john", ""))
        self.assertIsNone(await self.login("john", None))
        self.assertIsNone(await self.login("john", 1234))
        self.assertIsNone(await self.provider.check_password("john", "m.login.password", {}))
        self.assertEqual(self.api.http_client.calls, 0)
        self.assertEqual(self.stand_in.requests, [])

    async def test_user_of_another_server_is_refused_without_asking(self) -> None:
        self.assertIsNone(await self.login("@john:other.org"))
        self.assertIsNone(await self.login("@john"))
        self.assertIsNone(await self.login("@:example.org"))
        self.assertIsNone(await self.login("jo hn"))
        self.assertEqual(self.stand_in.requests, [])

    async def test_server_down_fails_closed_fast(self) -> None:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        provider = MxisdPasswordProvider(
            MxisdPasswordProvider.parse_config({"endpoint": f"http://127.0.0.1:{port}"}), self.api
        )
        started = time.monotonic()
        with self.assertLogs("mxisd_synapse", level="WARNING") as logs:
            self.assertIsNone(await self.login("john", provider=provider))
        self.assertLess(time.monotonic() - started, 2)
        self.assertNotIn(PASSWORD, "\n".join(logs.output))
        self.assertEqual(self.api.users, {})

    async def test_http_500_fails_closed_and_never_logs_the_password(self) -> None:
        # The error body echoes the request, password included: it must not be logged.
        self.stand_in.respond = lambda body: (500, json.dumps({"error": body}).encode())
        with self.assertLogs("mxisd_synapse", level="DEBUG") as logs:
            self.assertIsNone(await self.login("john"))
        text = "\n".join(logs.output)
        self.assertIn("500", text)
        self.assertNotIn(PASSWORD, text)
        self.assertEqual(self.api.users, {})

    async def test_bad_replies_fail_closed(self) -> None:
        for status, payload in (
            (200, b"this is not json"),
            (200, b""),
            (200, []),
            (200, {}),
            (200, {"auth": None}),
            (200, {"auth": "yes"}),
            (200, {"auth": {"success": "true"}}),
            (200, {"auth": {"success": 1}}),
            (200, {"auth": {}}),
            (404, {"errcode": "M_UNRECOGNIZED"}),
            (503, b"<html>down</html>"),
        ):
            with self.subTest(status=status, payload=payload):
                self.stand_in.reply_with(status, payload)
                with self.assertLogs("mxisd_synapse", level="INFO"):
                    self.assertIsNone(await self.login("john"))
        self.assertEqual(self.api.users, {})

    async def test_success_with_null_profile(self) -> None:
        self.stand_in.reply_with(200, {"auth": {"success": True, "profile": None}})
        self.assertEqual(await self.login("john"), ("@john:example.org", None))
        self.assertEqual(self.api.registered, [("john", None)])
        self.assertEqual(self.api.users["@john:example.org"]["threepids"], [])

    async def test_success_with_profile_fields_of_the_wrong_type(self) -> None:
        self.api.add_user("@john:example.org", "John")
        for profile in (
            {"display_name": 42, "three_pids": "email"},
            {"display_name": ["John"], "three_pids": [None, 3, {"medium": 1, "address": "x"}]},
            {"display_name": {"x": 1}, "three_pids": {"medium": "email"}},
            {"display_name": "   ", "three_pids": [{"medium": "email"}, {"address": "a@b.c"}]},
            "not an object",
            [],
        ):
            with self.subTest(profile=profile):
                self.stand_in.reply_with(200, {"auth": {"success": True, "display_name": None, "profile": profile}})
                self.assertEqual(await self.login("john"), ("@john:example.org", None))
        self.assertEqual(self.api.displayname_calls, [])
        self.assertEqual(self.api.users["@john:example.org"]["threepids"], [])

    async def test_top_level_display_name_is_a_fallback(self) -> None:
        self.stand_in.reply_with(200, {"auth": {"success": True, "display_name": "Legacy Name", "profile": {}}})
        self.assertEqual(await self.login("john"), ("@john:example.org", None))
        self.assertEqual(self.api.registered, [("john", "Legacy Name")])

    async def test_timeout_is_honoured(self) -> None:
        provider = self.make_provider(timeout=0.3)
        self.stand_in.delay = 3.0
        started = time.monotonic()
        with self.assertLogs("mxisd_synapse", level="WARNING") as logs:
            result = await self.login("john", provider=provider)
        elapsed = time.monotonic() - started
        self.stand_in.release.set()  # let the stand-in answer, so its thread ends now
        self.assertIsNone(result)
        self.assertGreaterEqual(elapsed, 0.25)
        self.assertLess(elapsed, 1.5)
        self.assertIn("did not answer within 0.3 s", "\n".join(logs.output))
        self.assertEqual(self.api.users, {})

    async def test_profile_failures_never_fail_the_login(self) -> None:
        self.api.add_user("@john:example.org", "old name")
        self.api.add_user("@jane:example.org", "Jane", [("email", "john.doe@example.org")])
        self.api.fail_set_displayname = True
        with self.assertLogs("mxisd_synapse", level="WARNING") as logs:
            self.assertEqual(await self.login("john"), ("@john:example.org", None))
        text = "\n".join(logs.output)
        self.assertIn("display name", text)
        self.assertIn("john.doe@example.org", text)  # taken by jane
        # The address jane has is skipped, the phone number is still added.
        self.assertEqual(self.api.users["@john:example.org"]["threepids"], [("msisdn", "33612345678")])

    async def test_no_threepid_call_in_this_synapse(self) -> None:
        self.api._hs = None
        with self.assertLogs("mxisd_synapse", level="WARNING") as logs:
            self.assertEqual(await self.login("john"), ("@john:example.org", None))
            self.assertEqual(await self.login("john"), ("@john:example.org", None))
        self.assertEqual(len([line for line in logs.output if "add_threepid" in line]), 1)
        self.assertEqual(self.api.users["@john:example.org"]["threepids"], [])

    async def test_user_synapse_cannot_create_is_refused(self) -> None:
        self.stand_in.reply_with(200, {"auth": {"success": True}})
        with self.assertLogs("mxisd_synapse", level="WARNING") as logs:
            self.assertIsNone(await self.login("_reserved"))
        self.assertIn("could not create", "\n".join(logs.output))

    async def test_mxid_in_the_reply(self) -> None:
        self.stand_in.reply_with(200, {"auth": {"success": True, "mxid": "@j.doe:example.org"}})
        self.assertEqual(await self.login("john"), ("@j.doe:example.org", None))
        self.assertEqual(self.api.registered, [("j.doe", None)])
        self.stand_in.reply_with(200, {"auth": {"success": True, "mxid": "@j.doe:elsewhere.org"}})
        with self.assertLogs("mxisd_synapse", level="WARNING"):
            self.assertIsNone(await self.login("john"))
        self.stand_in.reply_with(200, {"auth": {"success": True, "mxid": 7}})
        with self.assertLogs("mxisd_synapse", level="WARNING"):
            self.assertIsNone(await self.login("john"))

    async def test_other_login_types_are_ignored(self) -> None:
        self.assertIsNone(await self.provider.check_password("john", "m.login.token", {"password": PASSWORD}))
        self.assertEqual(self.stand_in.requests, [])


if __name__ == "__main__":
    logging.basicConfig(level=logging.CRITICAL)
    unittest.main()
