"""The smoke run's person in the assistant: signs in to internal-host with the product's own sign-in
and consent pages (as a browser would submit them), asks one question, and reads the turn's events
over SSE until the turn ends. Exits non-zero when sign-in fails or the turn does not end cleanly;
prints what the model did. Whatever a small local model answers, the loop must end and at least
one tool call must reach an MCP server and come back.

Usage: smoke_assistant.py ASSISTANT_URL ORGANIZATION EMAIL
with the person's password in DEMO_USER_PASSWORD.
"""

import json
import os
import re
import sys
import time

import httpx

QUESTION = "Which incidents are open right now? Use a tool to look."
TURN_TIMEOUT_SECONDS = 600


def hidden_fields(page: str) -> dict:
    fields = {}
    for tag in re.findall(r"<input[^>]*>", page):
        if 'type="hidden"' in tag:
            name = re.search(r'name="([^"]+)"', tag)
            value = re.search(r'value="([^"]*)"', tag)
            if name and value:
                fields[name.group(1)] = value.group(1)
    return fields


def follow(http: httpx.Client, response: httpx.Response) -> httpx.Response:
    """Follows redirects across the assistant and the authorization server, as a browser does."""
    for _ in range(10):
        if response.status_code not in (301, 302, 303, 307, 308):
            return response
        response = http.get(httpx.URL(str(response.url)).join(response.headers["location"]))
    raise SystemExit("smoke: too many redirects")


def fail(message: str) -> None:
    raise SystemExit(f"smoke: assistant: {message}")


def main() -> None:
    assistant, organization, email = sys.argv[1:4]
    password = os.environ["DEMO_USER_PASSWORD"]
    with httpx.Client(timeout=30, follow_redirects=False) as http:
        signed_out = http.get(f"{assistant}/")
        if "sign" not in signed_out.text.lower():
            fail(f"a signed-out visitor does not see the sign-in page ({signed_out.status_code})")

        started = time.monotonic()
        page = follow(http, http.get(f"{assistant}/auth/sign-in"))
        if 'action="/oauth/sign-in"' not in page.text:
            fail(f"the sign-in link did not lead to the product's sign-in page ({page.url})")
        form = hidden_fields(page.text) | {"organization": organization, "email": email, "password": password}
        page = follow(http, http.post(page.url.join("/oauth/sign-in"), data=form))
        if 'action="/oauth/consent"' in page.text:
            form = hidden_fields(page.text) | {"scope": "read", "decision": "allow"}
            page = follow(http, http.post(page.url.join("/oauth/consent"), data=form))
        if not str(page.url).startswith(assistant) or page.status_code != 200:
            fail(f"signing in did not come back to the assistant ({page.status_code} {page.url})")
        signed_in = time.monotonic() - started
        csrf = hidden_fields(page.text).get("csrf")
        if not csrf:
            fail("the signed-in page has no form with a CSRF token")
        print(f"smoke: assistant: signed in as {email} through the product's sign-in pages in {signed_in:.2f} s")

        asked = time.monotonic()
        chat = follow(http, http.post(f"{assistant}/conversations", data={"csrf": csrf, "question": QUESTION}))
        match = re.search(r"/conversations/([0-9a-f-]{36})", str(chat.url))
        if chat.status_code != 200 or not match:
            fail(f"asking a question did not open its conversation ({chat.status_code} {chat.url})")
        conversation = match.group(1)

        events = []
        with http.stream("GET", f"{assistant}/conversations/{conversation}/events",
                         timeout=httpx.Timeout(30, read=TURN_TIMEOUT_SECONDS)) as stream:
            if stream.status_code != 200:
                fail(f"the event stream answered {stream.status_code}")
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[len("data:"):].strip())["event"]
                events.append(event)
                if event.get("kind") == "turn_finished":
                    break
                if time.monotonic() - asked > TURN_TIMEOUT_SECONDS:
                    fail(f"the turn did not end within {TURN_TIMEOUT_SECONDS} s")
    finished = events[-1] if events else {}
    if finished.get("kind") != "turn_finished":
        fail(f"the event stream ended before the turn did: {events[-3:]}")
    tools = [event.get("tool") for event in events if event.get("kind") == "tool_call_started"]
    # The host's own tools (activating a capability group, paging a result) do not reach a server.
    real_calls = {event.get("call_id") for event in events
                  if event.get("kind") == "tool_call_started" and event.get("server") != "host"}
    # Made on the server: a result, a tool error, or a plan waiting for approval (not refused by
    # the host for bad arguments, not lost in transport).
    answered = [event for event in events
                if event.get("kind") == "tool_call_finished" and event.get("call_id") in real_calls
                and event.get("status") in ("ok", "tool_error", "awaiting_approval")]
    model = next((event.get("model") for event in events if event.get("kind") == "turn_started"), "?")
    answer = "".join(event.get("text", "") for event in events if event.get("kind") == "text")
    notices = [event.get("text") for event in events if event.get("kind") == "notice"]
    print(
        f"smoke: assistant: {model} ended the turn '{finished.get('status')}' after {time.monotonic() - asked:.1f} s: "
        f"{finished.get('model_calls')} model calls, tool calls {tools}, {len(answer)} characters of answer"
    )
    for notice in notices:
        print(f"smoke: assistant: notice: {notice}")
    if finished.get("status") not in ("completed", "stopped", "waiting_for_approval"):
        fail(f"the turn ended '{finished.get('status')}': {notices}")
    if not answered:
        finished_calls = [event for event in events if event.get("kind") == "tool_call_finished"]
        statuses = [event.get("status") for event in finished_calls]
        reasons = sorted({(event.get("text") or "")[:200] for event in finished_calls})
        problem = (f"the model made no tool call that an MCP server answered (tool calls {tools}, {statuses}); "
                   f"why: {reasons}")
        fail(problem)
    print(f"smoke: assistant: {len(answered)} tool calls reached an MCP server and came back "
          f"({', '.join(sorted({event.get('status', '?') for event in answered}))})")


if __name__ == "__main__":
    main()
