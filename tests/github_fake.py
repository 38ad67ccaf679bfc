"""A stand-in for api.github.com's issue comments, on 127.0.0.1 (GITHUB_API_URL).

It serves what atex_ci.pr_comment calls, as GitHub answers it (REST API
2022-11-28): ``GET /repos/O/R/issues/N/comments`` in pages of ``per_page``
(at most 100, default 30) with a ``Link`` header naming the ``next`` page,
``POST`` of a new comment (201), ``PATCH /repos/O/R/issues/comments/ID``
(200), and ``GET /repos/O/R/pulls/N`` with its head commit. Every request
must carry the token as ``Authorization: Bearer TOKEN`` (else 401); a
``writable`` false answers writes 403 "Resource not accessible by
integration", as for a read-only workflow token. Requests are recorded.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

BOT = {"login": "github-actions[bot]", "type": "Bot"}


@dataclass
class FakeGitHub:
    token: str
    repository: str = "owner/repo"
    url: str = ""
    writable: bool = True
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    heads: dict[int, str] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    next_id: int = 1000

    def add(self, number: int, body: str, user: dict[str, str] | None = None) -> dict[str, Any]:
        """A comment already on pull request ``number``."""
        self.next_id += 1
        comment = {
            "id": self.next_id,
            "body": body,
            "user": user or BOT,
            "html_url": f"https://github.invalid/{self.repository}/pull/{number}#c{self.next_id}",
        }
        self.comments.setdefault(number, []).append(comment)
        return comment

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] != "GET"]


def _handler(fake: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    prefix = f"/repos/{fake.repository}/"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def answer(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
            raw = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

        def route(self, method: str) -> None:
            parts = urlsplit(self.path)
            fake.requests.append((method, parts.path))
            if self.headers.get("Authorization") != f"Bearer {fake.token}":
                self.answer(401, {"message": "Bad credentials"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            payload = json.loads(self.rfile.read(length)) if length else None
            path = parts.path.removeprefix(prefix)
            if not parts.path.startswith(prefix):
                self.answer(404, {"message": "Not Found"})
            elif method != "GET" and not fake.writable:
                self.answer(403, {"message": "Resource not accessible by integration"})
            elif match := re.fullmatch(r"issues/(\d+)/comments", path):
                number = int(match.group(1))
                if method == "GET":
                    self.list(number, parse_qs(parts.query))
                else:
                    self.answer(201, fake.add(number, payload["body"]))
            elif match := re.fullmatch(r"issues/comments/(\d+)", path):
                found = [c for cs in fake.comments.values() for c in cs if c["id"] == int(match[1])]
                if not found:
                    self.answer(404, {"message": "Not Found"})
                    return
                found[0]["body"] = payload["body"]
                self.answer(200, found[0])
            elif match := re.fullmatch(r"pulls/(\d+)", path):
                number = int(match.group(1))
                if number not in fake.heads:
                    self.answer(404, {"message": "Not Found"})
                    return
                self.answer(200, {"number": number, "head": {"sha": fake.heads[number]}})
            else:
                self.answer(404, {"message": "Not Found"})

        def list(self, number: int, query: dict[str, list[str]]) -> None:
            per_page = min(int(query.get("per_page", ["30"])[0]), 100)
            page = int(query.get("page", ["1"])[0])
            comments = fake.comments.get(number, [])
            chunk = comments[(page - 1) * per_page : page * per_page]
            headers = {}
            if page * per_page < len(comments):
                base = f"{fake.url}{prefix}issues/{number}/comments"
                headers["Link"] = f'<{base}?per_page={per_page}&page={page + 1}>; rel="next"'
            self.answer(200, chunk, headers)

        def do_GET(self) -> None:
            self.route("GET")

        def do_POST(self) -> None:
            self.route("POST")

        def do_PATCH(self) -> None:
            self.route("PATCH")

    return Handler


@contextlib.contextmanager
def fake_github(token: str, repository: str = "owner/repo") -> Iterator[FakeGitHub]:
    """A FakeGitHub serving on 127.0.0.1 until the block ends."""
    fake = FakeGitHub(token, repository)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
