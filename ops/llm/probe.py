"""Probes a running model server the way the assistant uses it, and prints figures and verdicts.

Run by `ops/local-model probe [--url URL]` (standard library only). Against the OpenAI-compatible
base URL (…/v1) it sends a plain chat request and a `response_format: json_schema` request shaped
like the assistant's tool choice ({"tool": one of the names, "arguments": {...}}, strings with a
maxLength: a reply cut by max_tokens is not valid JSON), each streamed and not; then native tool calls (`tools`, `tool_choice: required`, no parallel calls), and Anthropic-style `/v1/messages`
on the same server, plain and streamed. For each call: seconds, generated tokens, tokens per second,
and a one-line verdict. What the model answers is printed, never judged: a 270M base model answers
poorly. Exits 1 when a call the assistant depends on (chat, JSON schema) fails or the JSON is not valid.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

TOOL_NAMES = ["list_services", "get_incident", "query_metrics", "final_answer"]
TOOL_CHOICE_SCHEMA = {
    "type": "object",
    "properties": {
        "tool": {"type": "string", "enum": TOOL_NAMES},
        "arguments": {
            "type": "object",
            "properties": {
                "service": {"type": "string", "maxLength": 40},
                "incident_id": {"type": "string", "maxLength": 40},
                "text": {"type": "string", "maxLength": 200},
            },
            "additionalProperties": False,
        },
    },
    "required": ["tool", "arguments"],
    "additionalProperties": False,
}
SYSTEM = (
    "You are the operations assistant of a monitoring product. Choose one tool and its arguments. "
    "Tools: list_services (no arguments), get_incident (incident_id), query_metrics (service), "
    "final_answer (text)."
)
QUESTION = "Which incidents are open for the checkout service?"
MAX_TOKENS = 160


def post(url, body, stream, timeout=120):
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json"},
    )
    return urllib.request.urlopen(request, timeout=timeout)


def sse_events(response):
    """Yields (event name, parsed data) of a server-sent-event stream."""
    event = None
    for raw in response:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                yield event, json.loads(data)
            except json.JSONDecodeError:
                yield event, {"unparsed": data}
        elif not line:
            event = None


def figures(seconds, tokens, timings):
    rate = timings.get("predicted_per_second") if timings else None
    if rate is None and tokens:
        rate = tokens / seconds
    rate_text = f"{rate:5.1f} tok/s" if rate else "   ? tok/s"
    tokens_text = f"{tokens:4d} tokens" if tokens is not None else "   ? tokens"
    return f"{seconds:6.2f} s {tokens_text} {rate_text}"


def chat(base_url, model, extra, stream):
    """One Chat Completions call: (seconds, content, tool_calls, tokens, timings, first byte seconds)."""
    body = {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.2,
        "stream": stream,
        **extra,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    started = time.monotonic()
    with post(f"{base_url}/chat/completions", body, stream) as response:
        if not stream:
            answer = json.load(response)
            seconds = time.monotonic() - started
            message = answer["choices"][0]["message"]
            tokens = (answer.get("usage") or {}).get("completion_tokens")
            return seconds, message.get("content") or "", message.get("tool_calls") or [], tokens, answer.get("timings"), None
        content, calls, tokens, timings, first = "", {}, None, None, None
        for _, chunk in sse_events(response):
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    first = first or time.monotonic() - started
                    content += delta["content"]
                for call in delta.get("tool_calls") or []:
                    first = first or time.monotonic() - started
                    entry = calls.setdefault(call.get("index", 0), {"function": {"name": "", "arguments": ""}})
                    function = call.get("function") or {}
                    entry["function"]["name"] += function.get("name") or ""
                    entry["function"]["arguments"] += function.get("arguments") or ""
            if chunk.get("usage"):
                tokens = chunk["usage"].get("completion_tokens")
            if chunk.get("timings"):
                timings = chunk["timings"]
        return time.monotonic() - started, content, [calls[i] for i in sorted(calls)], tokens, timings, first


def check_tool_choice(content):
    """The verdict on a JSON-schema reply: (valid, text)."""
    try:
        value = json.loads(content)
    except json.JSONDecodeError as error:
        return False, f"not JSON ({error})"
    if not isinstance(value, dict) or value.get("tool") not in TOOL_NAMES or not isinstance(value.get("arguments"), dict):
        return False, "JSON, but not {tool: one of the names, arguments: {...}}"
    return True, f"valid: tool={value['tool']} arguments={json.dumps(value['arguments'])}"


def messages(root_url, model, stream, tools=False):
    """One Anthropic Messages call: (seconds, text, tool uses, tokens)."""
    body = {
        "model": model,
        "max_tokens": MAX_TOKENS,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": stream,
    }
    if tools:
        body["tools"] = [
            {"name": name, "description": name.replace("_", " "), "input_schema": {"type": "object", "properties": {}}}
            for name in TOOL_NAMES
        ]
        body["tool_choice"] = {"type": "any"}
    started = time.monotonic()
    with post(f"{root_url}/v1/messages", body, stream) as response:
        if not stream:
            answer = json.load(response)
            text = "".join(block.get("text", "") for block in answer.get("content", []) if block.get("type") == "text")
            uses = [block for block in answer.get("content", []) if block.get("type") == "tool_use"]
            return time.monotonic() - started, text, uses, (answer.get("usage") or {}).get("output_tokens")
        text, uses, tokens, kinds = "", [], None, set()
        for event, data in sse_events(response):
            kinds.add(event or data.get("type"))
            if data.get("type") == "content_block_start" and data["content_block"].get("type") == "tool_use":
                uses.append(data["content_block"])
            if data.get("type") == "content_block_delta" and data["delta"].get("type") == "text_delta":
                text += data["delta"]["text"]
            if data.get("type") == "message_delta":
                tokens = (data.get("usage") or {}).get("output_tokens")
        if "message_stop" not in kinds:
            raise ValueError(f"no message_stop event (saw {sorted(k for k in kinds if k)})")
        return time.monotonic() - started, text, uses, tokens


def short(text, limit=110):
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8092/v1", help="the OpenAI-compatible base URL (…/v1)")
    parser.add_argument("--model", default="gemma-3-270m")
    options = parser.parse_args()
    base_url = options.url.rstrip("/")
    root_url = base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url
    failures = 0

    def report(ok, name, line):
        print(f"{'ok  ' if ok else 'FAIL'} {name:<28} {line}", flush=True)

    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=10) as response:
            names = [entry.get("id") for entry in json.load(response).get("data", [])]
        report(options.model in names, "GET /v1/models", f"models: {names}")
    except (urllib.error.URLError, OSError, ValueError) as error:
        report(False, "GET /v1/models", f"no answer from {base_url}: {error}")
        return 1
    try:
        with urllib.request.urlopen(f"{root_url}/props", timeout=10) as response:
            props = json.load(response)
        template = props.get("chat_template") or ""
        print(f"     server: template starts {short(template, 60)!r}; slots {props.get('total_slots')}", flush=True)
    except (urllib.error.URLError, OSError, ValueError):
        pass

    schema_format = {"response_format": {"type": "json_schema", "json_schema": {"name": "tool_choice", "strict": True, "schema": TOOL_CHOICE_SCHEMA}}}
    for stream in (False, True):
        mode = "stream" if stream else "plain"
        try:
            seconds, content, _, tokens, timings, first = chat(base_url, options.model, {}, stream)
            extra = f", first token {first:.2f} s" if first else ""
            report(bool(content.strip()), f"chat ({mode})", f"{figures(seconds, tokens, timings)}{extra}: {short(content)!r}")
            failures += not content.strip()
        except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
            report(False, f"chat ({mode})", f"error: {error}")
            failures += 1
    for stream in (False, True):
        mode = "stream" if stream else "plain"
        try:
            seconds, content, _, tokens, timings, _ = chat(base_url, options.model, schema_format, stream)
            valid, verdict = check_tool_choice(content)
            report(valid, f"json_schema ({mode})", f"{figures(seconds, tokens, timings)}: {verdict}")
            failures += not valid
        except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
            report(False, f"json_schema ({mode})", f"error: {error}")
            failures += 1
    tools = [
        {"type": "function", "function": {"name": name, "description": name.replace("_", " "), "parameters": {"type": "object", "properties": {}}}}
        for name in TOOL_NAMES
    ]
    for stream in (False, True):
        mode = "stream" if stream else "plain"
        try:
            seconds, content, calls, tokens, timings, _ = chat(base_url, options.model, {"tools": tools, "tool_choice": "required", "parallel_tool_calls": False}, stream)
            names = [call["function"]["name"] for call in calls]
            verdict = f"tool calls {names}" if calls else f"no tool call; text {short(content, 70)!r}"
            report(bool(calls), f"native tools ({mode})", f"{figures(seconds, tokens, timings)}: {verdict} (informational)")
        except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
            report(False, f"native tools ({mode})", f"error: {error} (informational)")
    for stream, with_tools in ((False, False), (True, False), (False, True)):
        name = f"/v1/messages ({'stream' if stream else 'plain'}{', tools' if with_tools else ''})"
        try:
            seconds, text, uses, tokens = messages(root_url, options.model, stream, with_tools)
            if with_tools:
                verdict = f"tool_use {[use.get('name') for use in uses]}" if uses else f"no tool_use; text {short(text, 70)!r}"
                report(bool(uses), name, f"{figures(seconds, tokens, None)}: {verdict} (informational)")
            else:
                report(bool(text.strip()), name, f"{figures(seconds, tokens, None)}: answers, {short(text)!r}")
        except urllib.error.HTTPError as error:
            report(False, name, f"HTTP {error.code}: {short(error.read().decode('utf-8', 'replace'))}")
        except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
            report(False, name, f"error: {error}")
    print(f"{'all calls the assistant needs answered' if not failures else f'{failures} needed call(s) failed'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
