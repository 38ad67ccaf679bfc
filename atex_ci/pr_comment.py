"""The GitHub Action's pull request comment: one per workflow and job, updated in place.

This module owns the REST calls that post a run's Markdown summary on a pull
request (``python -m atex_ci.pr_comment``, run by action.yml's comment step
and the collect action's):

* the comment is found again by a hidden marker on its first line,
  ``<!-- atex-ci comment: KEY -->`` (KEY: the workflow and job), among the
  comments a bot wrote (the workflow's token posts as github-actions[bot]),
  following the listing's pages as GitHub links them;
* ``--mode always`` creates or updates it on every run; ``--mode failures``
  creates it only when failures count, and updates an existing one on a green
  run too, so that a pull request never shows a stale red comment;
* on ``workflow_run`` (the fork-safe recipe) the pull request number comes
  from the tests' artifact, so it is untrusted: the pull request's head must
  be the commit the tests ran on, or nothing is posted.

The token comes from the environment (GITHUB_TOKEN) and goes only into the
Authorization header of requests to GITHUB_API_URL; it is never printed, and
a "next page" link to another host is refused. A failed call is a warning
(``::warning::``), exit 0: a comment is a convenience, never the verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3

# GitHub rejects a comment body longer than 65,536 characters.
MAX_BODY = 65536
# Comments listed per request (GitHub's maximum page size).
PER_PAGE = 100
# Pages of comments read at most: 10,000 comments is far more than any pull
# request has, and bounds what a hostile or broken server can make us read.
MAX_PAGES = 100
# What of one response is read: a page of 100 comments of 65,536 characters.
MAX_RESPONSE = 8 * 1024 * 1024
# Seconds for one request (connect and each read).
TIMEOUT = 30
# A marker's key is shown in no rendering; it is kept short and to
# characters that cannot end the HTML comment.
MAX_KEY = 200
TRUNCATED = (
    "\n\n*The summary is truncated here; the job summary and the run directory have all of it.*\n"
)
MODES = ("always", "failures")


class CommentError(Exception):
    """A call that did not work: its one-line reason (never the token)."""


def marker(key: str) -> str:
    """The hidden first line that finds the comment of ``key`` again."""
    clean = re.sub(r"[^\w ./:@+=#()\[\]-]", "_", key)[:MAX_KEY].replace("--", "-_")
    return f"<!-- atex-ci comment: {clean} -->"


def body(key: str, summary: str) -> str:
    """The comment's text: the marker, then ``summary`` cut to GitHub's limit."""
    head = marker(key) + "\n"
    room = MAX_BODY - len(head)
    if len(summary) > room:
        summary = summary[: room - len(TRUNCATED)] + TRUNCATED
    return head + summary


@dataclass
class GitHub:
    """The REST API of one repository, with the job's token."""

    api_url: str
    repository: str
    token: str

    def __post_init__(self) -> None:
        self.session = requests.Session()
        self.session.headers.update(
            {
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "atex-ci",
            }
        )

    def url(self, path: str) -> str:
        return f"{self.api_url.rstrip('/')}/repos/{self.repository}/{path}"

    def call(self, method: str, url: str, payload: Any = None) -> tuple[Any, requests.Response]:
        if not url.startswith(self.api_url.rstrip("/") + "/"):
            raise CommentError(f"refusing to send the token to {url.split('?')[0]}")
        where = f"{method} {url.split('?')[0].removeprefix(self.api_url.rstrip('/'))}"
        try:
            response = self.session.request(
                method, url, json=payload, timeout=TIMEOUT, stream=True, allow_redirects=False
            )
            with response:
                raw = response.raw.read(MAX_RESPONSE + 1, decode_content=True)
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise CommentError(f"{where}: {type(exc).__name__}") from None
        if len(raw) > MAX_RESPONSE:
            raise CommentError(f"{where}: the answer is larger than {MAX_RESPONSE} bytes")
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        if not 200 <= response.status_code < 300:
            message = data.get("message") if isinstance(data, dict) else None
            reason = f" {str(message)[:200]}" if message else ""
            raise CommentError(f"{where} answered {response.status_code}{reason}")
        return data, response

    def comments(self, number: int) -> list[dict[str, Any]]:
        """Every comment of issue/pull request ``number``, page after page."""
        found: list[dict[str, Any]] = []
        url: str | None = self.url(f"issues/{number}/comments?per_page={PER_PAGE}")
        for _ in range(MAX_PAGES):
            if url is None:
                return found
            data, response = self.call("GET", url)
            if not isinstance(data, list):
                raise CommentError("the comment listing is not a list")
            found.extend(item for item in data if isinstance(item, dict))
            url = response.links.get("next", {}).get("url")
        raise CommentError(f"more than {MAX_PAGES} pages of comments")

    def pull_head(self, number: int) -> str:
        data, _ = self.call("GET", self.url(f"pulls/{number}"))
        head = data.get("head") if isinstance(data, dict) else None
        return str(head.get("sha", "")) if isinstance(head, dict) else ""


def find(comments: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The first comment a bot wrote that starts with ``key``'s marker."""
    first = marker(key)
    for comment in comments:
        user = comment.get("user")
        text = comment.get("body")
        if not isinstance(user, dict) or user.get("type") != "Bot" or not isinstance(text, str):
            continue
        if text.split("\n", 1)[0].strip() == first:
            return comment
    return None


def pull_request(event_name: str, event: dict[str, Any], given: str) -> int | None:
    """The pull request to comment on: ``given``, else the event's; None if there is none."""
    if given:
        if not re.fullmatch(r"[1-9][0-9]{0,9}", given.strip()):
            raise CommentError(f"the pull request number {given[:40]!r} is not a number")
        return int(given.strip())
    pull = event.get("pull_request") if event_name.startswith("pull_request") else None
    number = pull.get("number") if isinstance(pull, dict) else None
    return number if isinstance(number, int) and number > 0 else None


def post(
    github: GitHub,
    number: int,
    key: str,
    summary: str,
    mode: str,
    failing: bool,
    head_sha: str = "",
) -> str:
    """Create or update the comment; what was done, in words."""
    if head_sha and github.pull_head(number) != head_sha:
        raise CommentError(
            f"pull request #{number} is not at commit {head_sha[:12]}, which the tests ran on"
        )
    existing = find(github.comments(number), key)
    if existing is None and mode == "failures" and not failing:
        return f"no failures: no comment on pull request #{number}"
    text = body(key, summary)
    if existing is None:
        data, _ = github.call("POST", github.url(f"issues/{number}/comments"), {"body": text})
        return f"commented on pull request #{number} ({_html_url(data)})"
    comment_id = existing.get("id")
    if not isinstance(comment_id, int):
        raise CommentError("the comment found has no id")
    data, _ = github.call("PATCH", github.url(f"issues/comments/{comment_id}"), {"body": text})
    return f"updated the comment on pull request #{number} ({_html_url(data)})"


def _html_url(data: Any) -> str:
    url = data.get("html_url") if isinstance(data, dict) else None
    return str(url) if url else "no link"


def _event() -> tuple[str, dict[str, Any]]:
    name = os.environ.get("GITHUB_EVENT_NAME", "")
    path = os.environ.get("GITHUB_EVENT_PATH", "")
    try:
        data = json.loads(Path(path).read_text()) if path else {}
    except (OSError, ValueError):
        data = {}
    return name, data if isinstance(data, dict) else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m atex_ci.pr_comment")
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--summary", type=Path, required=True)
    parser.add_argument("--failing", choices=("true", "false"), required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--pull-request", default="")
    args = parser.parse_args(argv)
    token = os.environ.get("GITHUB_TOKEN", "")
    repository = os.environ.get("GITHUB_REPOSITORY", "")
    api_url = os.environ.get("GITHUB_API_URL") or "https://api.github.com"
    event_name, event = _event()
    try:
        number = pull_request(event_name, event, args.pull_request)
        if number is None:
            print(f"atex-ci: no pull request for this {event_name or 'event'}: no comment")
            return 0
        if not token or not repository:
            raise CommentError("no token (github-token input) or no GITHUB_REPOSITORY")
        head_sha = ""
        if event_name == "workflow_run":
            run = event.get("workflow_run")
            head_sha = str(run.get("head_sha", "")) if isinstance(run, dict) else ""
            if not head_sha:
                raise CommentError("the workflow_run event names no head commit")
        with args.summary.open(encoding="utf-8", errors="replace") as file:
            summary = file.read(MAX_BODY + 1)  # more is cut anyway
        done = post(
            GitHub(api_url, repository, token),
            number,
            args.key,
            summary,
            args.mode,
            args.failing == "true",
            head_sha,
        )
    except (CommentError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        reason = " ".join(reason.split())
        print(f"::warning::atex-ci: no pull request comment: {reason}")
        return 0
    print(f"atex-ci: {done}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
