"""Whether the hub can be reached is asked through huggingface_hub's own client: behind
a proxy (HTTP(S)_PROXY) the answer comes through the proxy, as the download would."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ENDPOINT = "http://hub.invalid"  # resolves nowhere: only a proxy can answer for it


class FakeProxy(BaseHTTPRequestHandler):
    """A forward proxy that answers the hub's model-info request itself."""

    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        FakeProxy.seen.append(self.path)
        body = json.dumps({"id": "org/model", "modelId": "org/model", "sha": "0" * 40, "private": False,
                           "tags": [], "siblings": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub import constants

    from factinject.models import base

    monkeypatch.setattr(constants, "ENDPOINT", ENDPOINT)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    base.hub_reachable.cache_clear()
    huggingface_hub.close_session()  # the client reads the proxy variables when it is made
    yield base
    base.hub_reachable.cache_clear()
    huggingface_hub.close_session()


def test_without_a_route_the_hub_is_unreachable(hub):
    assert hub.hub_reachable("org/model") is False


def test_behind_a_proxy_the_hub_is_reached_through_it(hub, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_address[1]}")
        FakeProxy.seen.clear()
        assert hub.hub_reachable("org/model") is True
        assert FakeProxy.seen and FakeProxy.seen[0].startswith(f"{ENDPOINT}/api/models/org/model")
    finally:
        server.shutdown()


def test_offline_mode_is_never_online(hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub.hub_reachable("org/model") is False
