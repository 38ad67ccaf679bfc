"""A Testing Farm stand-in: a real HTTP server on 127.0.0.1 for our tests.

It implements the parts of the Testing Farm API that atex-ci uses (POST, GET
and DELETE /v0.1/requests, GET /v0.1/whoami, GET /v0.1/composes/RANCH), the
artifacts server's pipeline.log (with HTTP Range support), and a public
address lookup (/ip). Each request "provisions" one of our sshd test hosts
(tests/hosts.py): the host's authorized_keys is replaced by the public key the
request carries in TF_RESERVATION_AUTHORIZED_KEYS_BASE64, a little after the
log has announced the guest, as the real reservation test does; when the
request ends or is cancelled, the host's own authorized_keys comes back and
the host is free for the next request.

State moves forward on each GET of a request (so tests synchronise on what
the client does, never on time): new -> queued -> running (once a host is
free) -> log lines appear -> guest announced -> key installed. Fault
injection:

- ``fail_next(status, n, method=None, path=None)``: the next n matching calls
  answer ``status`` (429 or 500 bursts);
- ``delay_next(seconds, n, ...)``: the next n matching calls answer late;
- ``behaviours``: what each new request does, in submission order:
  ``"ok"`` (default), ``"error"`` (goes from queued to error),
  ``"no-guest"`` (runs, but its log never names a guest);
- ``hold()``: new requests stay queued until ``release_held()``;
- ``expire_token()``: every call with the token now gets 401;
- ``ignore_range``: pipeline.log is served whole, as a server without Range support does.

Everything the server saw is in ``calls`` (method, path, status,
Authorization header, JSON body) and each request's body in ``requests``;
``wait_for(predicate)`` waits on it. A request whose environment mistypes a
field the API types strictly (artifacts, skip_guest_setup, provisioning tags,
post_install_script) is refused with 400, as the API does.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.hosts import SSHHost

TOKEN = "tf-fake-token-6b1f0c3e9d2a4e57"

# GETs of a running request between log milestones (kept small: each GET is
# one poll of the client).
_LOG_SCRIPT = [
    "[pre-artifact-installation] preparing the environment",
    "Guest is being provisioned",
    None,  # the guest line goes here
    "execute task #1",
]


@dataclass
class Call:
    method: str
    path: str
    status: int
    authorization: str | None
    body: Any = None


@dataclass
class FakeRequest:
    id: str
    body: dict[str, Any]
    behaviour: str
    state: str = "new"
    gets: int = 0
    log: bytearray = field(default_factory=bytearray)
    host: SSHHost | None = None
    script: int = 0
    key_installed: bool = False
    saved_keys: bytes | None = None


@dataclass
class _Fault:
    status: int | None
    delay: float
    remaining: int
    method: str | None
    path: str | None
    body: bytes | None = None


class FakeTestingFarm:
    """The stand-in server; use as a context manager (it stops on exit)."""

    def __init__(self, hosts: list[SSHHost], *, ranch: str = "redhat", token: str = TOKEN):
        self.hosts = list(hosts)
        self.free = list(hosts)
        self.ranch = ranch
        self.token = token
        self.token_valid = True
        self.behaviours: list[str] = []
        self.requests: dict[str, FakeRequest] = {}
        self.calls: list[Call] = []
        self.address_status = 200
        #: Serve pipeline.log whole (200) whatever Range asks, like a plain web server.
        self.ignore_range = False
        self._faults: list[_Fault] = []
        self._held = False
        self._cond = threading.Condition()
        self._connections: set[Any] = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        # Handler threads are joined on close (none outlives the stand-in).
        self._server.daemon_threads = False
        self._server.block_on_close = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- life cycle ----------------------------------------------------------------

    @property
    def base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        return self.base + "/v0.1"

    def __enter__(self) -> FakeTestingFarm:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.shutdown()
        with self._cond:
            connections = list(self._connections)
        for sock in connections:  # ends keep-alive connections' handler threads
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join(10)
        with self._cond:
            for request in self.requests.values():
                self._free_host(request)

    def env(self) -> dict[str, str]:
        """Environment for an atex-ci process that talks to this stand-in."""
        return {
            "TESTING_FARM_API_URL": self.url,
            "TESTING_FARM_API_TOKEN": self.token,
            "ATEX_CI_TF_TIME_SCALE": "0.001",
        }

    # -- fault injection -----------------------------------------------------------

    def fail_next(
        self, status: int, n: int = 1, method: str | None = None, path: str | None = None
    ) -> None:
        with self._cond:
            self._faults.append(_Fault(status, 0.0, n, method, path))

    def delay_next(
        self, seconds: float, n: int = 1, method: str | None = None, path: str | None = None
    ) -> None:
        with self._cond:
            self._faults.append(_Fault(None, seconds, n, method, path))

    def answer_next(
        self,
        body: bytes,
        status: int = 200,
        n: int = 1,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer ``status`` with ``body`` as it is (a hostile or broken server)."""
        with self._cond:
            self._faults.append(_Fault(status, 0.0, n, method, path, body))

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()

    def expire_token(self) -> None:
        with self._cond:
            self.token_valid = False

    def hold(self) -> None:
        """New requests stay queued until release_held()."""
        with self._cond:
            self._held = True

    def release_held(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()

    # -- what happened -------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
        """Wait until predicate() (called under the lock) holds; AssertionError if not."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError("the Testing Farm stand-in never saw what was expected")

    def count(self, method: str, prefix: str = "/v0.1/requests") -> int:
        with self._cond:
            return sum(1 for c in self.calls if c.method == method and c.path.startswith(prefix))

    def deleted(self) -> list[str]:
        """Request ids that got a DELETE (each once, in order)."""
        with self._cond:
            ids: list[str] = []
            for c in self.calls:
                if c.method == "DELETE":
                    rid = c.path.rsplit("/", 1)[-1]
                    if rid not in ids:
                        ids.append(rid)
            return ids

    def states(self) -> dict[str, str]:
        with self._cond:
            return {r.id: r.state for r in self.requests.values()}

    # -- the state machine (called with the lock held) -------------------------------

    def _advance(self, request: FakeRequest) -> None:
        request.gets += 1
        if request.state == "new":
            request.state = "queued"
            self._log(request, "request queued")
            return
        if request.state == "queued":
            if request.behaviour == "error":
                request.state = "error"
                # Testing Farm's log can show the environment, secrets included.
                secrets = request.body["environments"][0].get("secrets") or {}
                self._log(request, f"environment: {' '.join(secrets.values())}")
                self._log(request, "Result of testing: ERROR")
                return
            if self._held:
                return
            if not self.free:
                return  # stays queued until a host is free
            request.host = self.free.pop(0)
            request.state = "running"
            self._log(request, "pipeline started")
            return
        if request.state != "running":
            return
        if request.behaviour == "no-guest":
            self._log(request, f"still waiting for a guest ({request.gets})")
            return
        if request.script < len(_LOG_SCRIPT):
            line = _LOG_SCRIPT[request.script]
            request.script += 1
            if line is None:
                assert request.host is not None
                line = (
                    f"[{time.strftime('%H:%M:%S')}] [+] [guest-setup] Guest is ready: "
                    f"ArtemisGuest(fake-{request.id[:8]}, root@{request.host.address}, "
                    "arch=x86_64, compose=X)"
                )
            self._log(request, line)
            return
        if not request.key_installed:
            self._install_key(request)
            self._log(request, "starting tests execution")

    def _log(self, request: FakeRequest, line: str) -> None:
        request.log += (f"{time.strftime('%H:%M:%S')} {line}\n").encode()

    def _install_key(self, request: FakeRequest) -> None:
        assert request.host is not None
        env = request.body["environments"][0]
        keys = base64.b64decode(env["secrets"]["TF_RESERVATION_AUTHORIZED_KEYS_BASE64"])
        path = request.host.state_dir / "authorized_keys"
        request.saved_keys = path.read_bytes()
        _replace(path, keys)
        request.key_installed = True

    def _free_host(self, request: FakeRequest) -> None:
        host = request.host
        if host is None:
            return
        if request.saved_keys is not None:
            with contextlib.suppress(OSError):
                _replace(host.state_dir / "authorized_keys", request.saved_keys)
        request.host = None
        self.free.append(host)

    # -- HTTP ------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 60  # an idle keep-alive connection is dropped after this

            def setup(self) -> None:
                super().setup()
                with fake._cond:
                    fake._connections.add(self.connection)

            def finish(self) -> None:
                with fake._cond:
                    fake._connections.discard(self.connection)
                super().finish()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

            def do_GET(self) -> None:
                fake._dispatch(self, "GET")

            def do_POST(self) -> None:
                fake._dispatch(self, "POST")

            def do_DELETE(self) -> None:
                fake._dispatch(self, "DELETE")

        return Handler

    def _dispatch(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = handler.path.split("?", 1)[0]
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        auth = handler.headers.get("Authorization")
        with self._cond:
            fault = self._take_fault(method, path)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        with self._cond:
            if fault is not None and fault.body is not None:
                status, body, headers = fault.status or 200, fault.body, {}
            elif fault is not None and fault.status is not None:
                status, body, headers = fault.status, {"message": "injected fault"}, {}
            else:
                status, body, headers = self._route(method, path, raw, auth, handler)
            self.calls.append(Call(method, path, status, auth, _json_or_none(raw)))
            self._cond.notify_all()
        if isinstance(body, bytes):
            payload, ctype = body, "text/plain"
        else:
            payload, ctype = json.dumps(body).encode(), "application/json"
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", ctype)
            handler.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:
            pass  # the client gave up (a timeout test)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.remaining <= 0:
                continue
            if fault.method and fault.method != method:
                continue
            if fault.path and not path.startswith(fault.path):
                continue
            fault.remaining -= 1
            return fault
        return None

    def _route(
        self, method: str, path: str, raw: bytes, auth: str | None, handler: Any
    ) -> tuple[int, Any, dict[str, str]]:
        if path == "/ip":
            if self.address_status != 200:
                return self.address_status, b"unavailable\n", {}
            return 200, b"127.0.0.1\n", {}
        match = re.fullmatch(r"/artifacts/([0-9a-f-]+)/pipeline\.log", path)
        if match and method == "GET":
            return self._pipeline_log(match[1], handler.headers.get("Range"))
        if not path.startswith("/v0.1/"):
            return 404, {"message": "not found"}, {}
        if auth is not None or method != "GET" or path == "/v0.1/whoami":
            if auth != f"Bearer {self.token}":
                return 401, {"message": "Not authorized: invalid token"}, {}
            if not self.token_valid:
                return 401, {"message": "Not authorized: token expired"}, {}
        rest = path[len("/v0.1") :]
        if rest == "/whoami" and method == "GET":
            return (
                200,
                {"token": {"id": "tok-1", "ranch": self.ranch}, "user": {"id": "user-1"}},
                {},
            )
        if rest.startswith("/composes/") and method == "GET":
            return 200, {"composes": [{"name": "Fedora-Rawhide"}, {"name": "X"}]}, {}
        if rest == "/requests" and method == "POST":
            return self._submit(raw)
        match = re.fullmatch(r"/requests/([0-9a-f-]+)", rest)
        if match:
            request = self.requests.get(match[1])
            if request is None:
                return 404, {"message": "No such entity"}, {}
            if method == "GET":
                self._advance(request)
                return 200, self._describe(request), {}
            if method == "DELETE":
                if request.state in ("new", "queued", "running"):
                    request.state = "canceled"
                    self._free_host(request)
                    return 200, {"message": "canceled"}, {}
                return 409, {"message": f"request is {request.state}"}, {}
        return 405, {"message": "method not allowed"}, {}

    def _submit(self, raw: bytes) -> tuple[int, Any, dict[str, str]]:
        body = _json_or_none(raw)
        try:
            assert body["test"]["fmf"]["name"] == "/testing-farm/reserve"
            env = body["environments"][0]
            assert env["os"]["compose"]
            key = base64.b64decode(env["secrets"]["TF_RESERVATION_AUTHORIZED_KEYS_BASE64"])
            assert key.startswith(b"ssh-")
            _check_environment(env)
        except (AssertionError, KeyError, IndexError, TypeError, ValueError):
            return 400, {"message": "invalid request"}, {}
        request_id = str(uuid.uuid4())
        behaviour = self.behaviours.pop(0) if self.behaviours else "ok"
        self.requests[request_id] = FakeRequest(request_id, body, behaviour)
        return 200, {"id": request_id, "state": "new"}, {}

    def _describe(self, request: FakeRequest) -> dict[str, Any]:
        run = None
        if request.state != "new":
            run = {"artifacts": f"{self.base}/artifacts/{request.id}"}
        return {"id": request.id, "state": request.state, "run": run}

    def _pipeline_log(self, request_id: str, range_header: str | None) -> tuple[int, Any, dict]:
        request = self.requests.get(request_id)
        if request is None or request.state == "new":
            return 404, b"not found\n", {}
        data = bytes(request.log)
        if range_header is None or self.ignore_range:
            return 200, data, {}
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
        if not match:
            return 416, b"", {"Content-Range": f"bytes */{len(data)}"}
        start = int(match[1])
        end = int(match[2]) if match[2] else len(data) - 1
        if start >= len(data):
            return 416, b"", {"Content-Range": f"bytes */{len(data)}"}
        end = min(end, len(data) - 1)
        return 206, data[start : end + 1], {"Content-Range": f"bytes {start}-{end}/{len(data)}"}


def _check_environment(env: dict[str, Any]) -> None:
    """The fields of an environment the API types strictly (AssertionError if
    one is wrong): artifacts (a list of {type, id, ...}), settings.pipeline
    .skip_guest_setup (a boolean), settings.provisioning.tags (strings to
    strings) and .post_install_script (a string)."""
    for artifact in env.get("artifacts", []):
        assert isinstance(artifact["type"], str) and artifact["type"]
        assert isinstance(artifact["id"], str) and artifact["id"]
    settings = env.get("settings") or {}
    pipeline = settings.get("pipeline") or {}
    assert isinstance(pipeline.get("skip_guest_setup", False), bool)
    provisioning = settings.get("provisioning") or {}
    tags = provisioning.get("tags", {})
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
    assert isinstance(provisioning.get("post_install_script", ""), str)


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _replace(path: os.PathLike[str] | str, data: bytes) -> None:
    """Replace a file atomically (sshd never reads half a key file)."""
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@contextlib.contextmanager
def fake_testing_farm(hosts: list[SSHHost], **kwargs: Any) -> Iterator[FakeTestingFarm]:
    with FakeTestingFarm(hosts, **kwargs) as fake:
        yield fake
