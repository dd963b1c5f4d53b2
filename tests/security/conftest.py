"""The hostile-input suite's fixtures: real servers on 127.0.0.1 and the real CLI.

``helpers.Recorder`` is an aiohttp server running in its own thread (so that the command
line, which runs its own event loop, can be invoked in-process with click's
``CliRunner``). It records every request. Two are shared by the whole session:

* ``canary``: a server that must never be reached. Every test ends by asserting that
  it recorded nothing (``_canary_untouched``).
* ``server``: an allowed destination; its record is cleared before each test. It
  answers by path: ``/status/<code>`` (``?retry_after=`` adds that header),
  ``/redirect?to=<url>``, ``/raw?body=<json>``,
  ``/deep``, ``/slow`` (3 s), ``/echo/<code>`` (the request headers as JSON, with
  that status), and JSON ``{"status": "ok"}`` for anything else.

``tls_server`` is an https server with a self-signed certificate; ``fake_dns`` makes
public-looking names resolve to internal addresses. ``helpers.write_project`` writes a
project into a folder and ``helpers.cli`` runs ``flowrunner --project <root> ...``.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from .helpers import LOOPBACK, Recorder


@pytest.fixture(scope="session")
def canary() -> Iterator[Recorder]:
    recorder = Recorder().start()
    yield recorder
    recorder.stop()


@pytest.fixture(scope="session")
def _shared_server() -> Iterator[Recorder]:
    recorder = Recorder().start()
    yield recorder
    recorder.stop()


@pytest.fixture
def server(_shared_server: Recorder) -> Recorder:
    _shared_server.hits.clear()
    return _shared_server


@pytest.fixture(autouse=True)
def _canary_untouched(canary: Recorder) -> Iterator[None]:
    yield
    hits, canary.hits[:] = list(canary.hits), []
    assert hits == [], "the canary server was reached"


@pytest.fixture(scope="session")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorder]:
    """An https server with a self-signed certificate for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    recorder = Recorder(context).start()
    yield recorder
    recorder.stop()


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Names that resolve where a hostile DNS server would send them (the resolver
    seam is the operating system's ``getaddrinfo``, which aiohttp's resolver calls)."""
    names = {
        "rebind.example.net": LOOPBACK,
        "crm.example.com": LOOPBACK,
        "v6.example.net": "::1",
        "metadata.example.net": "169.254.169.254",
    }
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        return real(names.get(name, host), port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names
