"""The browser client's Python side: serving `cello.js` and answering its requests.

Its JavaScript runs in headless Chromium in test_browser.py."""

from __future__ import annotations

import pytest

import cello
from cello import App, ack, client_script
from cello.testing import TestClient
from servers import ROOT


def test_the_app_serves_the_client_as_a_module_browsers_revalidate() -> None:
    app = App()
    app.enable_client()
    with TestClient(app) as client:
        response = client.get("/cello.js")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/javascript; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.text == client_script()
        assert "export function connect" in response.text
        etag = response.headers["etag"]
        again = client.get("/cello.js", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert client.get("/cello.js", headers={"If-None-Match": '"old"'}).status_code == 200


def test_the_client_can_be_served_elsewhere() -> None:
    app = App()
    app.enable_client("/static/realtime.js")
    with TestClient(app) as client:
        assert client.get("/static/realtime.js").text == cello.client_script()
        assert client.get("/cello.js").status_code == 404


def test_ack_answers_a_request_with_data_or_an_error() -> None:
    request = {"type": "join", "data": {"room": "x"}, "ack": 7}
    assert ack(request, {"ok": True}) == {"ack": 7, "data": {"ok": True}}
    assert ack(request) == {"ack": 7, "data": None}
    assert ack(request, error="room is full") == {"ack": 7, "error": "room is full"}


@pytest.mark.parametrize(
    "message", [{"type": "say"}, {"ack": "7"}, {"ack": True}, ["ack", 1], "text", None]
)
def test_ack_refuses_what_is_not_a_request(message: object) -> None:
    with pytest.raises(ValueError, match="no `ack` number"):
        ack(message)


def test_the_live_feed_survives_what_a_client_may_send(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hostile or broken requests to the example's socket: each is answered with an
    error or ignored, and the connection goes on (never a 1011)."""
    monkeypatch.delenv("CELLO_HUB_URL", raising=False)
    monkeypatch.syspath_prepend(str(ROOT))
    from examples.live_feed import app

    junk = [
        "not json",
        "[1, 2]",
        '{"type": "post", "ack": "7"}',  # an ack that is not a number: not a request
        '{"type": "post", "ack": true, "data": {"text": "x"}}',
        '{"type": "post", "data": {"text": "no ack"}}',  # not a request: nothing answered
        '{"type": "nonsense", "ack": 3}',
    ]
    with TestClient(app) as client, client.websocket_connect("/ws/feed") as ws:
        assert ws.receive_json()["hub"] == "joined"
        for text in junk:
            ws.send_text(text)
        ws.send_text('{"type": "post", "data": 5, "ack": 4}')
        assert ws.receive_json() == {"ack": 4, "error": "a post is 1-500 characters of text"}
        ws.send_text('{"type": "post", "data": {"text": "hello"}, "ack": 5}')
        first, second = ws.receive_json(), ws.receive_json()
        assert {"ack": 5, "data": {"posted": True}} in (first, second)
        posted = first if "id" in first else second
        assert posted["data"] == {"text": "hello"}
