"""The supervisor's asynchronous checks (httpGet, tcpSocket) with kubelet's
semantics, on loopback (a Dialer of the caller's own network namespace)."""
from __future__ import annotations

import asyncio
import http.server
import socket
import threading

import pytest

from kubirun.node import checks, prober
from kubirun.node.netns import Dialer


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.end_headers()
            return
        if self.path == "/away":
            self.send_response(302)
            self.send_header("Location", "http://example.invalid/")
            self.end_headers()
            return
        if self.path == "/header":
            self.send_response(200 if self.headers.get("X-Probe") == "yes" else 403)
            self.end_headers()
            return
        self.send_response(200 if self.path == "/ok" else 500)
        self.end_headers()
        self.wfile.write(b"x" * 20000)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def port():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def _http(port, path, headers=None):
    return asyncio.run(checks.http(Dialer(None), "127.0.0.1", port, path, 2.0, headers))


def test_2xx_is_success_with_the_body_read_up_to_10_kib(port):
    result, body = _http(port, "/ok")
    assert (result, len(body)) == (prober.SUCCESS, prober.MAX_BODY)


def test_a_redirect_to_the_same_host_is_followed_and_elsewhere_is_success(port):
    assert _http(port, "/moved")[0] == prober.SUCCESS
    result, output = _http(port, "/away")
    assert result == prober.SUCCESS and output.startswith("Probe terminated redirects")


def test_500_is_failure_with_kubelets_words(port):
    assert _http(port, "/broken") == (prober.FAILURE, "HTTP probe failed with statuscode: 500")


def test_http_headers_are_sent(port):
    assert _http(port, "/header", {"X-Probe": "yes"})[0] == prober.SUCCESS
    assert _http(port, "/header")[0] == prober.FAILURE


def test_tcp_success_and_a_refused_connection():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    assert asyncio.run(checks.tcp(Dialer(None), "127.0.0.1", port, 1.0))[0] == prober.SUCCESS
    listener.close()
    result, output = asyncio.run(checks.tcp(Dialer(None), "127.0.0.1", port, 1.0))
    assert result == prober.FAILURE and output.startswith(f"dial tcp 127.0.0.1:{port}:")


def test_an_http_server_that_never_answers_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        result, output = asyncio.run(checks.http(Dialer(None), "127.0.0.1",
                                                 listener.getsockname()[1], "/", 0.3))
    finally:
        listener.close()
    assert result == prober.FAILURE and "context deadline exceeded" in output
