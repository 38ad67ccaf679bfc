"""Testing Farm: machines reserved through the Testing Farm HTTP API.

A reservation works the way Testing Farm's own ``testing-farm reserve`` does:
we submit a request that runs Testing Farm's reservation test
(``/testing-farm/reserve`` from https://gitlab.com/testing-farm/tests), which
installs our public key (the secret TF_RESERVATION_AUTHORIZED_KEYS_BASE64) on
the guest and then keeps it for TF_RESERVATION_DURATION minutes. We poll the
request, follow its ``pipeline.log`` with HTTP Range requests until the line
that names the guest appears, and probe SSH until our key is accepted. A
request that ends, never yields a guest, or whose guest never lets us in is
cancelled and tried again within a budget. ``release`` cancels the request
(DELETE). A machine whose release never comes is still bounded: the guest
goes away when the reservation duration (and the pipeline timeout) ends.

The line we look for in pipeline.log (Testing Farm's pipeline writes it once
the guest is provisioned; the host may be a name or an address)::

    [12:00:01] [+] [...] Guest is ready: ArtemisGuest(<name>, root@10.0.0.7, arch=x86_64, ...)

i.e. ``Guest is ready`` followed, on the same line, by the first ``USER@HOST``.

The API token comes only from the environment (TESTING_FARM_API_TOKEN); it is
sent only to the API (never to the artifacts server), never stored, and
removed from every message that could show it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import ipaddress
import logging
import os
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import environ_secrets, untrusted_json
from ..errors import ConfigError, InfraError
from ..model import Machine, MachineState
from ..rundir import RunDir, now_iso
from .base import Provisioner, Recipe, RecipeReader, generate_run_key, try_ssh_login
from .options import key_values

if TYPE_CHECKING:
    import click

# requests (and urllib3) are imported where they are used: declaring this
# provisioner's options must not cost an HTTP library's import.

log = logging.getLogger("atex_ci")

TOKEN_ENV = environ_secrets.TESTING_FARM_API_TOKEN
URL_ENV = "TESTING_FARM_API_URL"
#: Scales every wait below (polling, staggering, SSH probes, HTTP backoff).
#: For test stand-ins only: Testing Farm asks clients to poll no faster than
#: every 30 s, and production must never set it.
TIME_SCALE_ENV = "ATEX_CI_TF_TIME_SCALE"

#: The public Testing Farm API (what Testing Farm's own CLI talks to).
DEFAULT_API_URL = "https://api.testing-farm.io/v0.1"

#: Testing Farm's reservation test, as its own ``reserve`` command submits it.
RESERVE_TEST = {
    "url": "https://gitlab.com/testing-farm/tests",
    "ref": "main",
    "name": "/testing-farm/reserve",
}

#: Request states: alive while waiting or running; anything else has ended.
ALIVE_STATES = frozenset({"new", "queued", "running"})
#: A DELETE answered with one of these means the request is gone (or going).
GONE_STATUSES = frozenset({200, 202, 204, 404, 409})

#: Statuses worth retrying (with backoff), POST included: the API restarts
#: and rate-limits. A retried POST can create a second request we never
#: learn of; like any unreleased machine it ends with its reservation duration.
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
#: HTTP attempts after the first; with a backoff factor of 2 s that is about
#: two minutes of waiting for the API to come back.
HTTP_RETRIES = 6
HTTP_BACKOFF = 2.0
HTTP_BACKOFF_MAX = 60.0
#: (connect, read) timeouts of every HTTP call, seconds.
HTTP_TIMEOUT = (10.0, 60.0)

#: Poll the request (and its pipeline.log) this often. Testing Farm's limit.
POLL_INTERVAL = 30.0
#: Submissions of a --count N reservation are this far apart, so N requests
#: do not hit the API (and its rate limit) in the same second.
STAGGER = 10.0
#: Between SSH probes of a guest whose reservation test has not yet
#: installed our key.
PROBE_INTERVAL = 5.0
#: A request that has not named its guest after this long is cancelled and
#: tried again: queues are long at times, but an hour means trouble.
READY_TIMEOUT = 3600.0
#: A guest that does not accept our key within this long is given up.
SSH_TIMEOUT = 600.0
#: Reservation length asked of Testing Farm (minutes): the bound on a
#: machine whose release never comes.
DURATION = 240
#: Failed reservations tried again per reserve() call, on top of ``count``.
RETRIES = 2
#: Seconds a cancellation may take before we give up and say so.
CANCEL_TIMEOUT = 60.0

#: pipeline.log is read in ranges of at most this many bytes per poll, and a
#: line longer than MAX_LINE is cut (the log is untrusted and unbounded).
MAX_LOG_CHUNK = 1024 * 1024
MAX_LINE = 64 * 1024
#: An API answer is a few KB (a request's state with its guest); what is read
#: of one stops here, and its JSON is parsed within untrusted_json's depth.
MAX_API_ANSWER = 4 * 1024 * 1024
#: A JSON option (--hardware) is a few lines; anything near this
#: is a mistake (a file's contents pasted whole).
MAX_JSON_OPTION = 64 * 1024
#: Lines of the log kept for an error message.
LOG_TAIL_LINES = 15

#: Where to learn this machine's public address for the ingress rule.
ADDRESS_LOOKUP_URL = "https://ifconfig.me/ip"

_GUEST_LINE = re.compile(
    r"Guest is ready\b.*?\b([a-z_][a-z0-9_.-]{0,31})@"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?)"
)


def find_guest(line: str) -> tuple[str, str] | None:
    """(user, host) from a pipeline.log line announcing the guest, else None."""
    match = _GUEST_LINE.search(line)
    if not match:
        return None
    return match[1], match[2].strip("[]")


def api_url_from_env() -> str:
    """TESTING_FARM_API_URL (with or without the /v0.1 suffix, as Testing
    Farm's CLI accepts it), or the public API."""
    url = (os.environ.get(URL_ENV) or DEFAULT_API_URL).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{URL_ENV} must be an http(s) URL, not {url!r}")
    if not re.search(r"/v\d+(\.\d+)*$", url):
        url += "/v0.1"
    return url


def time_scale() -> float:
    raw = os.environ.get(TIME_SCALE_ENV)
    if not raw:
        return 1.0
    try:
        scale = float(raw)
    except ValueError:
        scale = -1.0
    if not 0 < scale <= 1:
        raise ConfigError(f"{TIME_SCALE_ENV} must be a number in (0, 1], not {raw!r}")
    return scale


_masked: set[str] = set()


def _mask_on_github(token: str) -> None:
    """Ask GitHub Actions to hide the token in its logs (once per process)."""
    if os.environ.get("GITHUB_ACTIONS") == "true" and token not in _masked:
        _masked.add(token)
        print(f"::add-mask::{token}", flush=True)


class LogFollower:
    """Follows a growing pipeline.log: bytes in, complete lines out.

    No I/O: the caller fetches ``offset``-onwards ranges and feeds them. Keeps
    at most MAX_LINE bytes of an unfinished line and the last LOG_TAIL_LINES
    lines (for error messages).
    """

    def __init__(self) -> None:
        self.offset = 0
        self._partial = b""
        self.tail: list[str] = []

    def feed(self, data: bytes) -> list[str]:
        self.offset += len(data)
        buffer = self._partial + data
        *complete, rest = buffer.split(b"\n")
        self._partial = rest[-MAX_LINE:]
        lines = [c[:MAX_LINE].decode("utf-8", "replace").rstrip("\r") for c in complete]
        self.tail = (self.tail + lines)[-LOG_TAIL_LINES:]
        return lines

    def tail_text(self) -> str:
        lines = [*self.tail, self._partial.decode("utf-8", "replace")]
        return " | ".join(line.strip()[:200] for line in lines if line.strip())


class TestingFarmAPI:
    """A small synchronous client of the Testing Farm API (call it from a thread).

    Every call has a timeout and is retried with backoff on 408/429/5xx
    (POST included) and on connection errors. 401, 403, 404 and 409 become
    one-line errors; nothing raised or logged ever contains the token.
    """

    __test__ = False  # not a pytest class

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        retries: int = HTTP_RETRIES,
        backoff: float | None = None,
        timeout: tuple[float, float] = HTTP_TIMEOUT,
    ) -> None:
        self.url = (url or api_url_from_env()).rstrip("/")
        # The CLI has taken it out of the environment already (environ_secrets).
        token = token if token is not None else environ_secrets.get(TOKEN_ENV) or ""
        token = token.strip()
        if not token:
            raise ConfigError(
                f"{TOKEN_ENV} is not set; export your Testing Farm API token in the environment"
            )
        if any(c.isspace() for c in token) or not token.isprintable():
            raise ConfigError(f"{TOKEN_ENV} contains whitespace or control characters")
        _mask_on_github(token)
        self._token = token
        #: Further values to keep out of messages (the provisioner adds the
        #: reservation's secrets).
        self.secrets: set[str] = set()
        self.timeout = timeout
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        if backoff is None:
            backoff = HTTP_BACKOFF * time_scale()
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            backoff_factor=backoff,
            backoff_max=HTTP_BACKOFF_MAX,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,  # every method, POST and DELETE included
            raise_on_status=False,  # give us the last answer for a clear message
            respect_retry_after_header=True,
        )
        self._api = requests.Session()
        self._api.headers["Authorization"] = f"Bearer {token}"
        self._api.headers["User-Agent"] = "atex-ci"
        self._api.mount("http://", HTTPAdapter(max_retries=retry))
        self._api.mount("https://", HTTPAdapter(max_retries=retry))
        # Artifacts live on another server: never send it the token.
        self._plain = requests.Session()
        self._plain.headers["User-Agent"] = "atex-ci"
        self._plain.mount("http://", HTTPAdapter(max_retries=retry))
        self._plain.mount("https://", HTTPAdapter(max_retries=retry))

    def close(self) -> None:
        self._api.close()
        self._plain.close()

    def redact(self, text: str) -> str:
        """``text`` with the token (and its base64 forms) replaced by ***."""
        token_forms = (self._token, base64.b64encode(self._token.encode()).decode())
        for secret in sorted({*token_forms, *self.secrets}, key=len, reverse=True):
            if secret:
                text = text.replace(secret, "***")
        return text

    # -- the endpoints -------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        return self._json("GET", "/whoami", what="whoami")

    def composes(self, ranch: str) -> dict[str, Any]:
        return self._json("GET", f"/composes/{ranch}", what=f"composes of ranch {ranch}")

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", "/requests", what="new request", json_body=spec)

    def get(self, request_id: str) -> dict[str, Any]:
        return self._json("GET", f"/requests/{request_id}", what=f"request {request_id}")

    def cancel(self, request_id: str) -> None:
        """Cancel a request; a request that is already gone is fine."""
        response = self._call("DELETE", f"/requests/{request_id}")
        if response.status_code not in GONE_STATUSES:
            self._fail(response, "DELETE", f"request {request_id}")

    def read_range(self, url: str, offset: int, limit: int = MAX_LOG_CHUNK) -> bytes | None:
        """Bytes of ``url`` from ``offset`` (at most ``limit``); None if not there yet."""
        import requests

        # Offsets count the file's own bytes: no compression on the way.
        headers = {"Range": f"bytes={offset}-{offset + limit - 1}", "Accept-Encoding": "identity"}
        try:
            with self._plain.get(url, headers=headers, timeout=self.timeout, stream=True) as r:
                if r.status_code in (404, 403, 416):  # not created yet / nothing new
                    return None if r.status_code != 416 else b""
                if r.status_code not in (200, 206):
                    raise InfraError(
                        f"Testing Farm artifacts: HTTP {r.status_code} for {self.redact(url)}"
                    )
                data = r.raw.read(
                    limit + (offset if r.status_code == 200 else 0), decode_content=True
                )
                # A server that ignores Range sends the whole file.
                return data[offset:] if r.status_code == 200 else data
        except requests.RequestException as exc:
            raise InfraError(
                f"cannot read {self.redact(url)}: {self.redact(_describe(exc))}"
            ) from None

    def get_text(self, url: str, limit: int = 4096) -> str:
        """A small plain-text document from another server (no token sent)."""
        import requests

        try:
            with self._plain.get(url, timeout=self.timeout, stream=True) as r:
                if r.status_code != 200:
                    raise InfraError(f"HTTP {r.status_code} from {url}")
                return r.raw.read(limit, decode_content=True).decode("utf-8", "replace")
        except requests.RequestException as exc:
            raise InfraError(f"cannot reach {url}: {_describe(exc)}") from None

    # -- plumbing ------------------------------------------------------------------

    def _call(self, method: str, path: str, json_body: dict[str, Any] | None = None) -> _Answer:
        import requests
        import urllib3

        try:
            with self._api.request(
                method, self.url + path, json=json_body, timeout=self.timeout, stream=True
            ) as response:
                body = response.raw.read(MAX_API_ANSWER + 1, decode_content=True)
                return _Answer(response.status_code, body)
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise InfraError(
                f"cannot reach the Testing Farm API at {self.url} ({method} {path}): "
                f"{self.redact(_describe(exc))}"
            ) from None

    def _json(
        self, method: str, path: str, *, what: str, json_body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        response = self._call(method, path, json_body)
        if response.status_code not in (200, 201):
            self._fail(response, method, what)
        try:
            data = response.json()
        except untrusted_json.UntrustedJSONError as exc:
            raise InfraError(
                f"Testing Farm API: {method} {path} did not answer with a JSON object "
                f"({exc.reason})"
            ) from None
        if not isinstance(data, dict):
            raise InfraError(f"Testing Farm API: {method} {path} did not answer with a JSON object")
        return data

    def _fail(self, response: _Answer, method: str, what: str) -> None:
        status = response.status_code
        detail = _message(response)
        if status == 401:
            raise ConfigError(
                f"Testing Farm rejected the API token (HTTP 401 on {what}); check {TOKEN_ENV} "
                "(it may have expired, and a token works only on its own ranch)"
            )
        if status == 403:
            raise ConfigError(
                f"Testing Farm refused {what} (HTTP 403): the token is not allowed to do that"
                + self.redact(detail)
            )
        if status == 404:
            raise InfraError(f"Testing Farm does not know {what} (HTTP 404){self.redact(detail)}")
        if status == 409:
            raise InfraError(
                f"Testing Farm: {what} conflicts with its current state (HTTP 409)"
                + self.redact(detail)
            )
        raise InfraError(f"Testing Farm API: HTTP {status} on {method} {what}{self.redact(detail)}")


@dataclass(frozen=True)
class _Answer:
    """An answer of the API: its status and at most MAX_API_ANSWER + 1 bytes of its body."""

    status_code: int
    body: bytes

    def json(self) -> Any:
        """The body's JSON; UntrustedJSONError (a ValueError) if it is not
        JSON, is larger than MAX_API_ANSWER or nests too deep."""
        return untrusted_json.loads(self.body, max_bytes=MAX_API_ANSWER)


def _message(response: _Answer) -> str:
    """': <the API's own message>' (one line, short), or ''."""
    try:
        data = response.json()
    except ValueError:
        return ""
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, str) or not message.strip():
        return ""
    return ": " + " ".join(message.split())[:200]


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())[:300]


def public_key_line(public_key: str) -> str:
    """An OpenSSH public key without its comment (which may name a user or host)."""
    kind, blob, *_comment = public_key.split()
    return f"{kind} {blob}"


def build_request(
    *,
    compose: str,
    arch: str,
    public_key: str,
    duration: int,
    pool: str | None = None,
    hardware: dict[str, Any] | None = None,
    kickstart: dict[str, Any] | None = None,
    variables: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
    context: dict[str, str] | None = None,
    pipeline_timeout: int | None = None,
    ingress_cidr: str | None = None,
    reserve_test: dict[str, str] | None = None,
    artifacts: list[dict[str, str]] | None = None,
    tags: dict[str, str] | None = None,
    skip_guest_setup: bool = False,
    post_install_script: str | None = None,
) -> dict[str, Any]:
    """The POST /requests body of one reservation (pure; see the module docstring).

    ``artifacts`` (``{"type", "id"}`` each), ``skip_guest_setup`` and
    ``post_install_script`` go where Testing Farm's API takes them for an
    environment; ``tags`` join (and may override) our provisioning tags.
    """
    keys = public_key_line(public_key) + "\n"
    provisioning: dict[str, Any] = {"tags": {"ArtemisUseSpot": "false", **(tags or {})}}
    if post_install_script:
        provisioning["post_install_script"] = post_install_script
    if ingress_cidr:
        provisioning["security_group_rules_ingress"] = [
            {
                "type": "ingress",
                "protocol": "-1",
                "cidr": ingress_cidr,
                "port_min": 0,
                "port_max": 65535,
            }
        ]
    environment: dict[str, Any] = {
        "arch": arch,
        "os": {"compose": compose},
        "variables": {**(variables or {}), "TF_RESERVATION_DURATION": str(duration)},
        "secrets": {
            **(secrets or {}),
            "TF_RESERVATION_AUTHORIZED_KEYS_BASE64": base64.b64encode(keys.encode()).decode(),
        },
        "settings": {"provisioning": provisioning},
    }
    if skip_guest_setup:
        environment["settings"]["pipeline"] = {"skip_guest_setup": True}
    if artifacts:
        environment["artifacts"] = [dict(artifact) for artifact in artifacts]
    if pool:
        environment["pool"] = pool
    if hardware:
        environment["hardware"] = hardware
    if kickstart:
        environment["kickstart"] = kickstart
    if context:
        environment["tmt"] = {"context": context}
    # The pipeline must outlive the reservation, or it ends the guest early.
    timeout = max(pipeline_timeout or 0, duration + 30)
    return {
        "test": {"fmf": dict(reserve_test or RESERVE_TEST)},
        "environments": [environment],
        "settings": {"pipeline": {"timeout": timeout}},
    }


@dataclass
class _Budget:
    """Failed reservations still allowed to be retried (shared by all slots)."""

    retries: int
    errors: list[str] = dataclasses.field(default_factory=list)


class _Attempt(Exception):
    """One reservation attempt failed in a way worth retrying."""


class TestingFarmProvisioner(Provisioner):
    """Reserves machines from Testing Farm; see the module docstring.

    Options mirror ``testing-farm reserve``: ``compose`` (required to
    reserve), ``arch``, ``pool``, ``hardware`` and ``kickstart`` (dicts as the
    API takes them), ``variables`` and ``secrets`` (environment of the
    reservation test; secrets are never recorded), ``context`` (tmt
    context), ``duration`` (minutes the guest is kept, the bound on a
    forgotten machine), ``pipeline_timeout`` (minutes), ``ingress`` (CIDR
    allowed in on the public ranch; looked up when None), ``artifacts``
    (builds and repositories to install, ``{"type", "id"}`` each), ``tags``
    (provisioning tags), ``skip_guest_setup``, ``post_install_script``.
    Timing parameters default to the module constants scaled by
    ATEX_CI_TF_TIME_SCALE.
    """

    __test__ = False  # not a pytest class
    kind = "testing-farm"

    def __init__(
        self,
        rundir: RunDir,
        platform: str = "default",
        *,
        compose: str | None = None,
        arch: str = "x86_64",
        pool: str | None = None,
        hardware: dict[str, Any] | None = None,
        kickstart: dict[str, Any] | None = None,
        variables: dict[str, str] | None = None,
        secrets: dict[str, str] | None = None,
        context: dict[str, str] | None = None,
        duration: int = DURATION,
        pipeline_timeout: int | None = None,
        ingress: str | None = None,
        artifacts: list[dict[str, str]] | None = None,
        tags: dict[str, str] | None = None,
        skip_guest_setup: bool = False,
        post_install_script: str | None = None,
        retries: int = RETRIES,
        ready_timeout: float = READY_TIMEOUT,
        ssh_timeout: float = SSH_TIMEOUT,
        poll_interval: float | None = None,
        stagger: float | None = None,
        probe_interval: float | None = None,
        address_lookup_url: str = ADDRESS_LOOKUP_URL,
        api: TestingFarmAPI | None = None,
    ) -> None:
        super().__init__(rundir, platform)
        scale = time_scale()
        self.compose = compose
        self.arch = arch
        self.pool = pool
        self.hardware = hardware
        self.kickstart = kickstart
        self.variables = dict(variables or {})
        self.secrets = dict(secrets or {})
        self.context = dict(context or {})
        if duration < 1:
            raise ConfigError("the reservation duration must be at least 1 minute")
        self.duration = duration
        self.pipeline_timeout = pipeline_timeout
        self.ingress = parse_ingress(ingress) if ingress is not None else None
        self.artifacts = [dict(a) for a in artifacts or []]
        self.tags = dict(tags or {})
        self.skip_guest_setup = skip_guest_setup
        self.post_install_script = post_install_script
        #: False when rebuilt from a recipe that left options out (variables,
        #: secrets): a machine asked for again would differ.
        self.replaceable = True
        self.retries = retries
        self.ready_timeout = ready_timeout
        self.ssh_timeout = ssh_timeout
        # Never faster than Testing Farm allows (scaled only for test stand-ins);
        # None asks for exactly that.
        self.poll_interval = max(poll_interval or 0.0, POLL_INTERVAL * scale)
        self.stagger = STAGGER * scale if stagger is None else stagger
        self.probe_interval = PROBE_INTERVAL * scale if probe_interval is None else probe_interval
        self.address_lookup_url = address_lookup_url
        self._api = api
        #: Requests submitted and not yet handed over as a machine (cancelled
        #: on interruption or failure).
        self.pending: set[str] = set()

    # -- how it is asked for and remembered -----------------------------------------

    @classmethod
    def options(cls) -> list[click.Option]:
        """``reserve --provisioner testing-farm``'s options (docs/provisioners.md)."""
        import click

        def pairs(name: str, help: str, metavar: str = "KEY=VALUE") -> click.Option:
            return click.Option([name], multiple=True, metavar=metavar, help=help)

        return [
            click.Option(
                ["--compose"], help="Testing Farm: the compose to install, e.g. Fedora-Rawhide."
            ),
            click.Option(
                ["--arch"], default="x86_64", show_default=True, help="Testing Farm: architecture."
            ),
            click.Option(["--pool"], help="Testing Farm: infrastructure pool."),
            click.Option(
                ["--hardware"], metavar="JSON", help="Testing Farm: hardware requirements (object)."
            ),
            pairs("--kickstart", "Testing Farm: kickstart (repeatable)."),
            click.Option(
                ["--variable", "variables"],
                multiple=True,
                metavar="KEY=VALUE",
                help="Testing Farm: environment variable of the reservation (repeatable).",
            ),
            click.Option(
                ["--secret", "secrets"],
                multiple=True,
                metavar="KEY[=VALUE]",
                help="Testing Farm: secret variable of the reservation; a bare KEY takes the "
                "value of $KEY (repeatable; never recorded).",
            ),
            pairs("--tmt-context", "Testing Farm: tmt context of the request (repeatable)."),
            click.Option(
                ["--duration"],
                type=click.IntRange(min=1),
                help="Testing Farm: minutes the machine is kept; bounds a machine never released "
                "(default: 240).",
            ),
            click.Option(
                ["--pipeline-timeout"],
                type=click.IntRange(min=1),
                help="Testing Farm: settings.pipeline.timeout in minutes (at least the duration "
                "+ 30).",
            ),
            click.Option(
                ["--ingress"],
                metavar="CIDR",
                help="Testing Farm, public ranch: network allowed in (default: this machine's "
                "public address, looked up).",
            ),
            click.Option(
                ["--ready-timeout"],
                metavar="DURATION",
                help="Testing Farm: give up on a request that has no guest after this long and "
                "try another (default: 1h).",
            ),
            click.Option(
                ["--artifact", "artifacts"],
                multiple=True,
                metavar="TYPE:ID",
                help="Testing Farm: a build or repository to install on the machine, e.g. "
                "fedora-koji-build:123456, fedora-copr-build:ID, redhat-brew-build:ID, "
                "repository:URL, repository-file:URL (repeatable).",
            ),
            pairs(
                "--tag",
                "Testing Farm: provisioning tag of the machine, as tmt's user-data "
                "(settings.provisioning.tags; repeatable).",
            ),
            click.Option(
                ["--skip-guest-setup"],
                is_flag=True,
                help="Testing Farm: skip its guest setup of the machine "
                "(settings.pipeline.skip_guest_setup).",
            ),
            click.Option(
                ["--post-install-script"],
                metavar="SCRIPT",
                help="Testing Farm: script the machine runs once it is provisioned "
                "(settings.provisioning.post_install_script).",
            ),
        ]

    @classmethod
    def recipe_from_options(
        cls, kind: str, platform: str, values: dict[str, Any], extra: dict[str, str]
    ) -> Recipe:
        """Parse the options; variables and secrets stay out of the record."""
        from ..duration import parse_duration

        if not values["compose"]:
            raise ConfigError("--provisioner testing-farm needs --compose, e.g. Fedora-Rawhide")
        hardware = values["hardware"]
        public: dict[str, Any] = {
            "compose": values["compose"],
            "arch": values["arch"],
            "pool": values["pool"],
            "hardware": parse_json_option("hardware", hardware) if hardware else None,
            "kickstart": key_values("--kickstart", values["kickstart"]) or None,
            "context": key_values("--tmt-context", values["tmt_context"]) or None,
            "pipeline_timeout": values["pipeline_timeout"],
            "ingress": parse_ingress(values["ingress"]) if values["ingress"] else None,
            "duration": values["duration"],
            "artifacts": [parse_artifact(a) for a in values["artifacts"]] or None,
            "tags": key_values("--tag", values["tag"]) or None,
            "skip_guest_setup": values["skip_guest_setup"] or None,
            "post_install_script": values["post_install_script"],
        }
        if values["ready_timeout"] is not None:
            try:
                public["ready_timeout"] = parse_duration(values["ready_timeout"])
            except ValueError as exc:
                raise ConfigError(f"invalid --ready-timeout: {exc}") from None
        unrecorded = {
            "variables": key_values("--variable", values["variables"]),
            "secrets": key_values("--secret", values["secrets"], from_env=True),
        }
        public = {k: v for k, v in public.items() if v is not None}
        return Recipe(kind, platform, public, unrecorded)

    @classmethod
    def write_recipe(cls, recipe: Recipe) -> dict[str, Any]:
        """The options and, as ``replaceable``, whether they are enough to ask
        for the same machine again (not when variables or secrets were given)."""
        replaceable = not any(recipe.unrecorded.values())
        return {**super().write_recipe(recipe), "replaceable": replaceable}

    @classmethod
    def from_recipe(
        cls, rundir: RunDir, recorded: RecipeReader, platform: str | None = None
    ) -> Provisioner:
        """For a release (no ``platform``): no options, run.json unread. For a
        replacement: the options recorded for that platform (none for another)."""
        if platform is None:
            return cls(rundir)
        found = recorded() or {}
        if found.get("platform", "default") != platform:
            return cls(rundir, platform)
        provisioner = cls(rundir, platform, **dict(found.get("options") or {}))
        provisioner.replaceable = found.get("replaceable", True) is not False
        return provisioner

    @property
    def api(self) -> TestingFarmAPI:
        if self._api is None:
            self._api = TestingFarmAPI()
        return self._api

    # -- reserving -----------------------------------------------------------------

    def can_replace(self) -> bool:
        """Yes when this instance knows everything to ask for: a compose (rebuilt
        for a release only, it has none) and a recipe that kept every option."""
        return self.compose is not None and self.replaceable

    async def reserve(self, count: int) -> AsyncGenerator[Machine, None]:
        """Reserve ``count`` machines in parallel, yielding each once SSH works."""
        if not self.compose:
            raise ConfigError("Testing Farm needs a compose: give --compose, e.g. Fedora-Rawhide")
        if count < 1:
            return
        api = self.api
        api.secrets.update(v for v in self.secrets.values() if len(v) >= 4)
        ranch = await self._ranch(api)
        ingress = await self._ingress_rule(api) if ranch == "public" else None
        await self._check_compose(api, ranch)
        key_path, public_key = await asyncio.to_thread(self._generate_key)
        spec = build_request(
            compose=self.compose,
            arch=self.arch,
            public_key=public_key,
            duration=self.duration,
            pool=self.pool,
            hardware=self.hardware,
            kickstart=self.kickstart,
            variables=self.variables,
            secrets=self.secrets,
            context=self.context,
            pipeline_timeout=self.pipeline_timeout,
            ingress_cidr=ingress,
            artifacts=self.artifacts,
            tags=self.tags,
            skip_guest_setup=self.skip_guest_setup,
            post_install_script=self.post_install_script,
        )
        budget = _Budget(self.retries)
        tasks = [
            asyncio.ensure_future(self._reserve_slot(i, spec, key_path, budget))
            for i in range(count)
        ]
        yielded: set[asyncio.Future[Machine]] = set()
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    error = task.exception()
                    if error is None:
                        yielded.add(task)
                        yield self._reserved(task.result())
                    elif not isinstance(error, InfraError):
                        raise error  # a rejected token or option: the others fail alike
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Ready but never handed over (the caller stopped early): give back.
            for task in tasks:
                if task in yielded:
                    continue
                if not task.cancelled() and task.exception() is None:
                    handle: dict[str, str] = task.result().handle
                    await asyncio.shield(self._cancel_quietly(handle["request"]))
            if not yielded:  # no machine uses the key pair: leave no key behind
                for path in (key_path, key_path + ".pub"):
                    with contextlib.suppress(OSError):
                        (self.rundir.path / path).unlink()
        ready = len(yielded)
        failures = [t.exception() for t in tasks if not t.cancelled() and t.exception()]
        if failures:
            raise InfraError(f"reserved {ready} of {count} Testing Farm machine(s): {failures[0]}")

    def _generate_key(self) -> tuple[str, str]:
        """A fresh key pair in RUN/keys (see ``generate_run_key``)."""
        return generate_run_key(self.rundir, "testing-farm")

    async def _ranch(self, api: TestingFarmAPI) -> str | None:
        """The token's ranch ("public", "redhat"), as GET /whoami tells it."""
        who = await asyncio.to_thread(api.whoami)
        token = who.get("token")
        ranch = token.get("ranch") if isinstance(token, dict) else None
        return ranch if isinstance(ranch, str) and ranch.isidentifier() else None

    async def _check_compose(self, api: TestingFarmAPI, ranch: str | None) -> None:
        """Warn when the ranch's compose list does not have ours (the list may lag)."""
        if ranch is None:
            return
        try:
            listed = (await asyncio.to_thread(api.composes, ranch)).get("composes")
        except InfraError as exc:
            log.debug("cannot list the composes of ranch %s: %s", ranch, exc)
            return
        names = {c.get("name") for c in listed or [] if isinstance(c, dict)}
        if names and self.compose not in names:
            log.warning(
                "compose %s is not in Testing Farm's list for the %s ranch; the requests "
                "may fail (GET /composes/%s lists them)",
                self.compose,
                ranch,
                ranch,
            )

    async def _ingress_rule(self, api: TestingFarmAPI) -> str | None:
        """The CIDR to let in on the public ranch: --ingress, or our looked-up address."""
        if self.ingress:
            return self.ingress
        try:
            text = await asyncio.to_thread(api.get_text, self.address_lookup_url)
            return str(ipaddress.ip_network(text.strip()))
        except (InfraError, ValueError) as exc:
            log.warning(
                "cannot look up this machine's public address (%s); reserving without an "
                "ingress rule (give one with --ingress CIDR if SSH cannot get in)",
                _describe(exc),
            )
            return None

    async def _reserve_slot(
        self, index: int, spec: dict[str, Any], key: str, budget: _Budget
    ) -> Machine:
        """Reserve one machine, trying again within the shared budget."""
        await asyncio.sleep(index * self.stagger)
        while True:
            try:
                return await self._attempt(spec, key)
            except _Attempt as exc:
                budget.errors.append(str(exc))
                if budget.retries <= 0:
                    raise InfraError(str(exc)) from None
                budget.retries -= 1
                log.warning("%s; trying another request", exc)

    async def _attempt(self, spec: dict[str, Any], key: str) -> Machine:
        api = self.api
        submit = asyncio.ensure_future(asyncio.to_thread(api.submit, spec))
        try:
            created = await asyncio.shield(submit)
        except asyncio.CancelledError:
            # The POST is on its way and cannot be called back: learn the new
            # request's id and cancel it, or it would run until its timeout.
            with contextlib.suppress(Exception):
                late = (await submit).get("id")
                if isinstance(late, str) and late:
                    await self._cancel_quietly(late)
            raise
        request_id = created.get("id")
        if not isinstance(request_id, str) or not re.fullmatch(r"[A-Za-z0-9-]{1,64}", request_id):
            raise InfraError("Testing Farm answered a new request without a valid id")
        self.pending.add(request_id)
        log.info("Testing Farm request %s submitted", request_id)
        handed_over = False
        try:
            user, host = await self._wait_for_guest(request_id)
            machine = Machine(
                id=self._unique_id(f"{self.platform}-tf-{request_id[:8]}"),
                provisioner=self.kind,
                platform=self.platform,
                host=host,
                port=22,
                user=user,
                key=key,
                handle={"request": request_id, "api": api.url},
                reserved_at=now_iso(),
            )
            await self._wait_for_ssh(request_id, machine)
            handed_over = True
            return machine
        finally:
            if not handed_over:
                await asyncio.shield(self._cancel_quietly(request_id))

    async def _state(self, request_id: str) -> dict[str, Any]:
        data = await asyncio.to_thread(self.api.get, request_id)
        if not isinstance(data.get("state"), str):
            raise InfraError(f"Testing Farm request {request_id} has no state")
        return data

    async def _wait_for_guest(self, request_id: str) -> tuple[str, str]:
        """Poll until pipeline.log names the guest; _Attempt if the request ends
        or takes longer than ready_timeout."""
        follower = LogFollower()
        deadline = time.monotonic() + self.ready_timeout
        guest: tuple[str, str] | None = None
        while True:
            data = await self._state(request_id)
            state = data["state"]
            run = data.get("run")
            artifacts = run.get("artifacts") if isinstance(run, dict) else None
            if isinstance(artifacts, str) and artifacts.startswith(("http://", "https://")):
                url = artifacts.rstrip("/") + "/pipeline.log"
                guest = guest or await self._follow(url, follower)
                if guest is not None and state == "running":
                    return guest
            if state not in ALIVE_STATES:
                tail = self.api.redact(follower.tail_text())
                raise _Attempt(
                    f"Testing Farm request {request_id} ended ({state}) before its guest was "
                    f"ready" + (f"; pipeline.log ends: {tail}" if tail else "")
                )
            if time.monotonic() >= deadline:
                tail = self.api.redact(follower.tail_text())
                raise _Attempt(
                    f"Testing Farm request {request_id} named no guest within "
                    f"{self.ready_timeout:g} s (state {state})"
                    + (f"; pipeline.log ends: {tail}" if tail else "; no pipeline.log yet")
                )
            await asyncio.sleep(self.poll_interval)

    async def _follow(self, url: str, follower: LogFollower) -> tuple[str, str] | None:
        """Read what is new in pipeline.log; the guest if a new line names it."""
        while True:  # everything new before the next poll
            chunk = await asyncio.to_thread(self.api.read_range, url, follower.offset)
            if not chunk:
                return None
            for line in follower.feed(chunk):
                guest = find_guest(line)
                if guest is not None:
                    return guest

    async def _wait_for_ssh(self, request_id: str, machine: Machine) -> None:
        """Probe SSH until our key works (pinning the host key); _Attempt if it never does."""
        deadline = time.monotonic() + self.ssh_timeout
        next_poll = time.monotonic() + self.poll_interval
        connect_timeout = min(10.0, max(self.ssh_timeout, 0.1))
        while True:
            last = await try_ssh_login(machine, self.rundir, connect_timeout)
            if last is None:
                return
            now = time.monotonic()
            if now >= deadline:
                raise _Attempt(
                    f"the guest {machine.user}@{machine.host} of Testing Farm request "
                    f"{request_id} did not accept our key within {self.ssh_timeout:g} s: {last}"
                )
            if now >= next_poll:
                next_poll = now + self.poll_interval
                state = (await self._state(request_id))["state"]
                if state not in ALIVE_STATES:
                    raise _Attempt(
                        f"Testing Farm request {request_id} ended ({state}) while we waited "
                        f"for SSH on {machine.host}"
                    )
            await asyncio.sleep(self.probe_interval)

    async def _cancel_quietly(self, request_id: str) -> None:
        """Cancel a request we are giving up on; a failure is logged, not raised."""
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT):
                await asyncio.to_thread(self.api.cancel, request_id)
            self.pending.discard(request_id)
            log.info("Testing Farm request %s cancelled", request_id)
        except (InfraError, ConfigError, TimeoutError) as exc:
            log.warning(
                "could not cancel Testing Farm request %s (%s); it ends by itself after %d minutes",
                request_id,
                exc,
                self.duration,
            )

    # -- releasing -----------------------------------------------------------------

    async def release(self, machine: Machine) -> None:
        """Cancel the machine's request (DELETE); a request already gone is fine."""
        if machine.state == MachineState.RELEASED:
            return
        handle = machine.handle if isinstance(machine.handle, dict) else {}
        request_id = handle.get("request")
        if isinstance(request_id, str) and request_id:
            api = self.api
            if handle.get("api") and handle["api"] != api.url:
                raise ConfigError(
                    f"machine {machine.id} was reserved through {handle['api']}, but "
                    f"{URL_ENV} points at {api.url}"
                )
            try:
                async with asyncio.timeout(CANCEL_TIMEOUT):
                    await asyncio.to_thread(api.cancel, request_id)
            except TimeoutError:
                raise InfraError(
                    f"cancelling Testing Farm request {request_id} took longer than "
                    f"{CANCEL_TIMEOUT:g} s"
                ) from None
        self._released(machine)


def parse_ingress(text: str) -> str:
    """A network allowed in on the public ranch, e.g. 192.0.2.7/32 (a bare address too)."""
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise ConfigError(f"invalid ingress network {text!r}: expected e.g. 192.0.2.7/32") from None


#: An artifact's type as Testing Farm names them (fedora-koji-build,
#: repository-file...): a short lowercase word with dashes.
_ARTIFACT_TYPE = re.compile(r"[a-z][a-z0-9-]{0,63}")


def parse_artifact(text: str) -> dict[str, str]:
    """``TYPE:ID`` (``--artifact``) as the API's ``{"type", "id"}``."""
    kind, sep, ident = text.partition(":")
    if not sep or not _ARTIFACT_TYPE.fullmatch(kind.strip()) or not ident.strip():
        raise ConfigError(
            f"invalid --artifact {text!r}: expected TYPE:ID, e.g. fedora-koji-build:123456 "
            "or repository-file:https://example.com/extra.repo"
        )
    return {"type": kind.strip(), "id": ident.strip()}


def parse_json_option(name: str, text: str) -> dict[str, Any]:
    """A JSON object given on the command line (--hardware, --kickstart)."""
    try:
        value = untrusted_json.loads(text, max_bytes=MAX_JSON_OPTION)
    except untrusted_json.UntrustedJSONError as exc:
        raise ConfigError(f"--{name} must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f'--{name} must be a JSON object, e.g. \'{{"memory": ">= 4 GB"}}\'')
    return value


__all__ = [
    "DEFAULT_API_URL",
    "LogFollower",
    "TestingFarmAPI",
    "TestingFarmProvisioner",
    "build_request",
    "find_guest",
    "parse_artifact",
]
