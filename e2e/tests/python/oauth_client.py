"""The official MCP Python SDK's OAuth client against external-mcp and demo-backend.

Driven by e2e/tests/e2e/oauth_python.rs, which starts the real binaries and passes their URLs and
a seeded user's credentials in the environment. From scratch, the SDK's OAuthClientProvider
discovers the protected resource and the authorization server, registers (DCR), runs PKCE; the
browser's part (sign-in and consent forms) is answered here with httpx. A third client is
identified by a Client ID Metadata Document, served here over HTTPS (certificates from
test_ca.py, whose CA demo-backend trusts), and hostile documents are offered to the
authorization server. Prints one JSON object with what it saw on stdout; any failed check exits
non-zero.
"""

import asyncio
import base64
import hashlib
import http.server
import json
import os
import re
import ssl
import sys
import threading
import time
from urllib.parse import parse_qs, urlparse

import httpx
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
import httpx2

MCP_URL = os.environ["MCP_URL"]
API_URL = os.environ["API_URL"]
ORGANIZATION = os.environ["USER_ORGANIZATION"]
EMAIL = os.environ["USER_EMAIL"]
PASSWORD = os.environ["USER_PASSWORD"]
REDIRECT_URI = "http://127.0.0.1:18399/callback"
DOCUMENT_CERT = os.environ["DOCUMENT_CERT"]
DOCUMENT_KEY = os.environ["DOCUMENT_KEY"]


def check(condition, message):
    if not condition:
        print(f"check failed: {message}", file=sys.stderr)
        sys.exit(1)


class MemoryStorage(TokenStorage):
    def __init__(self):
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull):
        self.client_info = client_info


def hidden(html, name):
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    check(match is not None, f"no hidden field {name} in {html[:500]}")
    return match.group(1)


class Browser:
    """Answers the authorization pages as a person would: signs in, ticks `grant`, allows."""

    def __init__(self):
        self.grant = ["read"]
        self.authorization_urls = []
        self.result = None

    async def redirect_handler(self, authorization_url):
        self.authorization_urls.append(authorization_url)
        async with httpx.AsyncClient(follow_redirects=False) as browser:
            page = await browser.get(authorization_url)
            check(page.status_code == 200, f"sign-in page: {page.status_code} {page.text[:300]}")
            consent = await browser.post(
                urlparse(authorization_url)._replace(path="/oauth/sign-in", query="").geturl(),
                data={
                    "request": hidden(page.text, "request"),
                    "csrf": hidden(page.text, "csrf"),
                    "organization": ORGANIZATION,
                    "email": EMAIL,
                    "password": PASSWORD,
                },
            )
            check(consent.status_code == 200, f"sign-in: {consent.status_code} {consent.text[:300]}")
            form = {
                "request": hidden(consent.text, "request"),
                "csrf": hidden(consent.text, "csrf"),
                "decision": "allow",
                "scope": list(self.grant),
            }
            answer = await browser.post(
                urlparse(authorization_url)._replace(path="/oauth/consent", query="").geturl(), data=form
            )
            check(answer.status_code == 303, f"consent: {answer.status_code} {answer.text[:300]}")
            location = answer.headers["location"]
            check(location.startswith(REDIRECT_URI), f"redirected to {location}")
            query = parse_qs(urlparse(location).query)
            self.result = AuthorizationCodeResult(
                code=query["code"][0], state=query["state"][0], iss=query.get("iss", [None])[0]
            )

    async def callback_handler(self):
        result, self.result = self.result, None
        return result


class DocumentServer:
    """Serves client metadata documents over HTTPS on a loopback port, counting the fetches."""

    def __init__(self):
        self.fetches = {}
        documents = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                documents.fetches[self.path] = documents.fetches.get(self.path, 0) + 1
                status, headers, body = documents.answer(self.path)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(DOCUMENT_CERT, DOCUMENT_KEY)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.base = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path):
        return f"{self.base}{path}"

    def document(self, path, **changes):
        document = {
            "client_id": self.url(path),
            "client_name": "MCP Python SDK (metadata document)",
            "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
        document.update(changes)
        return {key: value for key, value in document.items() if value is not None}

    def answer(self, path):
        json_type = {"Content-Type": "application/json"}
        if path == "/client.json":
            return 200, {**json_type, "Cache-Control": "max-age=600"}, json.dumps(self.document(path)).encode()
        if path == "/impostor.json":
            return 200, json_type, json.dumps(self.document("/client.json")).encode()
        if path == "/with-secret.json":
            return 200, json_type, json.dumps(self.document(path, client_secret="shared")).encode()
        if path == "/secret-method.json":
            return 200, json_type, json.dumps(self.document(path, token_endpoint_auth_method="client_secret_basic")).encode()
        if path == "/other-redirect.json":
            return 200, json_type, json.dumps(self.document(path, redirect_uris=["https://evil.example/cb"])).encode()
        if path == "/huge.json":
            return 200, json_type, json.dumps(self.document(path, client_name="x" * 100, logo="y" * 200_000)).encode()
        if path == "/not-json.json":
            return 200, json_type, b"<html>hello</html>"
        if path == "/redirect.json":
            return 302, {"Location": self.url("/client.json")}, b""
        if path == "/slow.json":
            time.sleep(8)
            return 200, json_type, json.dumps(self.document(path)).encode()
        return 404, {}, b"not found"


def pkce_pair():
    verifier = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


async def authorize_page(client_id):
    """The authorization endpoint's answer for `client_id`: status, elapsed seconds, page text."""
    _, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "hostile",
        "scope": "read",
        "resource": MCP_URL,
    }
    started = time.perf_counter()
    async with httpx.AsyncClient(follow_redirects=False, timeout=30) as client:
        page = await client.get(f"{API_URL}/oauth/authorize", params=params)
    return page.status_code, time.perf_counter() - started, page.text


def provider(browser, storage, client_metadata_url=None):
    return OAuthClientProvider(
        server_url=MCP_URL,
        client_metadata_url=client_metadata_url,
        client_metadata=OAuthClientMetadata(
            client_name="MCP Python SDK interoperability test",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
    )


async def raw_mcp(token, body):
    async with httpx.AsyncClient() as client:
        return await client.post(
            MCP_URL,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json, text/event-stream",
                "Content-Type": "application/json",
            },
            json=body,
        )


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
WRITE_CALL = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {"name": "add_incident_note", "arguments": {"incident": "INC-1", "note": "step-up test"}},
}


async def main():
    report = {}
    browser = Browser()
    storage = MemoryStorage()
    started = time.perf_counter()
    async with httpx2.AsyncClient(auth=provider(browser, storage), timeout=30) as http_client:
        async with streamable_http_client(MCP_URL, http_client=http_client) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                names = sorted(tool.name for tool in tools.tools)
                listed = await session.call_tool("list_incidents", {})
                report["authorization_seconds"] = time.perf_counter() - started
                report["tools"] = names
                report["read_tool_is_error"] = bool(listed.is_error)
                report["registered_client_id"] = storage.client_info.client_id
                first_url = browser.authorization_urls[0]
                first_query = parse_qs(urlparse(first_url).query)
                report["requested_resource"] = first_query.get("resource", [None])[0]
                report["requested_scope"] = first_query.get("scope", [None])[0]
                report["granted_scope"] = storage.tokens.scope
                read_only_token = storage.tokens.access_token

                # A write tool with the read-only grant: the raw answer is the step-up challenge.
                refused = await raw_mcp(read_only_token, WRITE_CALL)
                report["write_with_read_grant_status"] = refused.status_code
                report["write_with_read_grant_challenge"] = refused.headers.get("www-authenticate", "")
                # The token is for external-mcp only: the API refuses it.
                async with httpx.AsyncClient() as client:
                    api = await client.get(f"{API_URL}/api/v1/me", headers={"Authorization": f"Bearer {read_only_token}"})
                report["api_with_mcp_token_status"] = api.status_code

    # Step-up through the SDK: a fresh session whose write call meets 403 insufficient_scope and
    # authorizes again for more.
    browser.grant = ["read", "write"]
    async with httpx2.AsyncClient(auth=provider(browser, storage), timeout=30) as http_client:
        async with streamable_http_client(MCP_URL, http_client=http_client) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                written = await session.call_tool("add_incident_note", {"incident": "INC-99999", "note": "step-up"})
                report["step_up_authorizations"] = len(browser.authorization_urls) - 1
                report["step_up_scope"] = parse_qs(urlparse(browser.authorization_urls[-1]).query).get("scope", [None])[0]
                report["scope_after_step_up"] = storage.tokens.scope
                report["write_after_step_up_text"] = " ".join(
                    getattr(block, "text", "") for block in written.content
                )

    # Refresh-token rotation: the old refresh token then fails and revokes the family.
    metadata = httpx.get(f"{API_URL}/.well-known/oauth-authorization-server").json()
    client_id = storage.client_info.client_id
    old_refresh = storage.tokens.refresh_token
    current_access = storage.tokens.access_token
    rotated = httpx.post(
        metadata["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": old_refresh, "client_id": client_id},
    )
    check(rotated.status_code == 200, f"refresh: {rotated.text}")
    rotated = rotated.json()
    report["rotated"] = rotated["refresh_token"] != old_refresh
    new_access = rotated["access_token"]
    report["new_access_status"] = (await raw_mcp(new_access, INITIALIZE)).status_code
    reused = httpx.post(
        metadata["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": old_refresh, "client_id": client_id},
    )
    report["reused_refresh_status"] = reused.status_code
    report["reused_refresh_error"] = reused.json().get("error")
    report["family_access_after_reuse_status"] = (await raw_mcp(new_access, INITIALIZE)).status_code
    report["earlier_access_after_reuse_status"] = (await raw_mcp(current_access, INITIALIZE)).status_code
    new_refresh = httpx.post(
        metadata["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": rotated["refresh_token"], "client_id": client_id},
    )
    report["family_refresh_after_reuse_error"] = new_refresh.json().get("error")

    # A second client from scratch, then RFC 7009 revocation: its token gets 401.
    browser = Browser()
    storage = MemoryStorage()
    started = time.perf_counter()
    async with httpx2.AsyncClient(auth=provider(browser, storage), timeout=30) as http_client:
        async with streamable_http_client(MCP_URL, http_client=http_client) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                await session.call_tool("find_services", {})
                report["second_authorization_seconds"] = time.perf_counter() - started
    token = storage.tokens.access_token
    report["before_revocation_status"] = (await raw_mcp(token, INITIALIZE)).status_code
    revoked = httpx.post(
        metadata["revocation_endpoint"], data={"token": token, "client_id": storage.client_info.client_id}
    )
    report["revocation_status"] = revoked.status_code
    after = await raw_mcp(token, INITIALIZE)
    report["after_revocation_status"] = after.status_code
    report["after_revocation_challenge"] = after.headers.get("www-authenticate", "")

    # A client identified by its metadata document: no registration at all.
    documents = DocumentServer()
    document_url = documents.url("/client.json")
    browser = Browser()
    storage = MemoryStorage()
    started = time.perf_counter()
    async with httpx2.AsyncClient(auth=provider(browser, storage, document_url), timeout=30) as http_client:
        async with streamable_http_client(MCP_URL, http_client=http_client) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                listed = await session.call_tool("list_incidents", {})
                report["document_authorization_seconds"] = time.perf_counter() - started
                report["document_read_tool_is_error"] = bool(listed.is_error)
    report["document_url"] = document_url
    report["document_client_id"] = storage.client_info.client_id
    report["document_authorize_client_id"] = parse_qs(urlparse(browser.authorization_urls[0]).query).get("client_id", [None])[0]
    report["document_fetches"] = documents.fetches.get("/client.json", 0)
    metadata_refreshed = httpx.post(
        metadata["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": storage.tokens.refresh_token, "client_id": document_url},
    )
    report["document_refresh_status"] = metadata_refreshed.status_code
    report["document_fetches_after_refresh"] = documents.fetches.get("/client.json", 0)

    # Hostile documents: each refused on the authorization page, nothing redirected.
    hostile = {}
    for path in [
        "/impostor.json",
        "/with-secret.json",
        "/secret-method.json",
        "/other-redirect.json",
        "/huge.json",
        "/not-json.json",
        "/redirect.json",
        "/slow.json",
        "/missing.json",
    ]:
        status, seconds, text = await authorize_page(documents.url(path))
        hostile[path] = {"status": status, "seconds": seconds, "text": re.sub(r"<[^>]+>", " ", text)}
    for client_id in [
        documents.url("/client.json?x=1"),
        documents.url("/a/../client.json"),
        documents.base.replace("https://", "http://") + "/client.json",
    ]:
        status, seconds, text = await authorize_page(client_id)
        hostile[client_id] = {"status": status, "seconds": seconds, "text": re.sub(r"<[^>]+>", " ", text)}
    report["hostile_documents"] = hostile
    documents.server.shutdown()
    print(json.dumps(report))


asyncio.run(main())
