"""schemathesis hooks for ops/contract-test: what the OpenAPI document cannot say.

Some rules of the API depend on the server's state or tie parameters together, which JSON Schema
cannot express. A request generated as *valid* ("positive") can then break them by chance and be
refused with 422, which schemathesis reports as a valid request rejected. This hook makes the
positive requests follow those rules, and touches nothing else: negative requests, the checks and
every other value stay as generated.

- A cursor is a position the API issued (`next_cursor`); a made-up one is refused. Positive
  requests get a real cursor of the same list, or none when the list has no second page.
- An Idempotency-Key names one logical request; reusing it for a different request is refused.
  Positive requests get a fresh key, as a client makes one per new request.
- A metrics window needs `from` before `to`, at most 90 days and at most 11000 points. Positive
  requests whose window breaks this get the hour before their `to` (or after their `from`).
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta, timezone

import requests
import schemathesis

BASE_URL = os.environ["CONTRACT_TEST_BASE_URL"]
TOKEN = os.environ["CONTRACT_TEST_TOKEN"]
MAX_RANGE = timedelta(days=90)
MAX_POINTS = 11_000
_cursors: dict[str, str | None] = {}


@schemathesis.hook
def before_call(context, case, kwargs):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    if case.headers:
        for name in list(case.headers):
            if name.lower() == "idempotency-key":
                case.headers[name] = str(uuid.uuid4())
    if case.query and "cursor" in case.query:
        cursor = issued_cursor(case.formatted_path)
        if cursor is None:
            del case.query["cursor"]
        else:
            case.query["cursor"] = cursor
    if case.query and "/metrics/" in case.path:
        keep_window_valid(case)


def issued_cursor(path: str) -> str | None:
    """The `next_cursor` of the first one-item page of the list at `path`, if any."""
    if path not in _cursors:
        response = requests.get(
            BASE_URL + path,
            params={"limit": 1},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        cursor = response.json().get("next_cursor") if response.status_code == 200 else None
        _cursors[path] = cursor
    return _cursors[path]


def keep_window_valid(case) -> None:
    query = case.query
    if "from" not in query and "to" not in query:
        return
    try:
        to = parse(query["to"]) if "to" in query else datetime.now(timezone.utc)
        start = parse(query["from"]) if "from" in query else None
    except (TypeError, ValueError):
        query.pop("from", None)
        query.pop("to", None)
        return
    if start is None:
        # The server's default start: 24 hours (range) or 1 hour (samples) before `to`.
        default = timedelta(hours=1) if case.path.endswith("/samples") else timedelta(hours=24)
        try:
            start = to - default
        except OverflowError:
            query.pop("to", None)
            return
    if start < to and (case.path.endswith("/samples") or fits_one_range_query(start, to, query)):
        return
    try:
        query["from"] = format_time(to - timedelta(hours=1))
        query["to"] = format_time(to)
    except OverflowError:
        query["from"] = format_time(start)
        query["to"] = format_time(start + timedelta(hours=1))


def fits_one_range_query(start: datetime, to: datetime, query: dict) -> bool:
    points = (to - start).total_seconds() / step_seconds(query.get("step"))
    return to - start <= MAX_RANGE and points <= MAX_POINTS


def parse(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("z", "Z"))
    if value.tzinfo is None:
        raise ValueError(text)
    return value


def format_time(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def step_seconds(step: str | None) -> int:
    if step is None:
        return 60
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(step[:-1]) * units[step[-1]]
