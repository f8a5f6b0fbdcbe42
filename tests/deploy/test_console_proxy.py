"""The debug console behind the documented nginx (``examples/deploy/nginx.conf``,
run for real with TLS) and the server's options from
``examples/deploy/pusher-server.service`` plus ``--console`` (issue 16, item 2):
the console asks for the secret (the request is proxied), its cookie is
``Secure``, its event stream passes nginx unbuffered, and its event creator
works (it answered 403: the ``Origin`` was compared with ``http://`` and the
``Host`` nginx passes on)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import requests

from flask_pusher.server import LocalServer
from flask_pusher.server.cli import load_config
from flask_pusher.server.cli import main as server_command

from .test_tls_proxy import DEPLOY
from .test_tls_proxy import free_port
from .test_tls_proxy import make_certificate
from .test_tls_proxy import render_site
from .test_tls_proxy import start_nginx
from .test_tls_proxy import stop_process
from .test_tls_proxy import TIMEOUT


def service_params() -> dict[str, object]:
    unit = (DEPLOY / "pusher-server.service").read_text()
    (line,) = re.findall(r"^ExecStart=(.*)$", unit, re.MULTILINE)
    argv = shlex.split(line)
    argv[argv.index("--config") + 1] = str(DEPLOY / "pusher-server.json")
    params: dict[str, object] = server_command.make_context(argv[2], argv[3:]).params
    return params


def test_the_console_and_its_event_creator_through_nginx_with_tls(tmp_path: Path) -> None:
    ca, cert, key = make_certificate(tmp_path)
    ports = {name: free_port() for name in ("http", "app", "ws")}
    (app,) = load_config(str(DEPLOY / "pusher-server.json"))
    proxies = service_params()["trusted_proxies"]
    assert isinstance(proxies, tuple)
    server = LocalServer([app], port=free_port(), console=True, trusted_proxies=proxies)
    server.start()
    nginx = None
    try:
        site = render_site(ports, {"app": free_port(), "ws": server.port}, cert, key)
        nginx = start_nginx(tmp_path, site, ports)
        base = f"https://127.0.0.1:{ports['ws']}"
        session = requests.Session()
        session.trust_env = False  # else REQUESTS_CA_BUNDLE, if set, wins over .verify
        session.verify = str(ca)
        # Proxied: the secret is asked for, although nginx connects from loopback.
        assert session.get(base + "/console", timeout=TIMEOUT).status_code == 401
        assert session.get(base + "/console/state", timeout=TIMEOUT).status_code == 403
        login = session.post(
            base + "/console/login",
            data={"secret": app.secret},
            allow_redirects=False,
            timeout=TIMEOUT,
        )
        assert login.status_code == 303
        assert "Secure" in login.headers["Set-Cookie"].split("; ")
        state = session.get(base + "/console/state", timeout=TIMEOUT)
        assert state.status_code == 200
        assert [a["app_id"] for a in state.json()["apps"]] == [app.app_id]
        with session.get(base + "/console/events", stream=True, timeout=TIMEOUT) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines(decode_unicode=True)
            assert next(line for line in lines if line.startswith("data:"))  # the hello
            created = session.post(
                base + "/console/trigger",
                json={"app_id": app.app_id, "channel": "news", "event": "hi", "data": "{}"},
                headers={"Origin": base},
                timeout=TIMEOUT,
            )
            assert (created.status_code, created.json()) == (200, {})
            for line in lines:
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    if event.get("type") == "api_message":
                        assert (event["channel"], event["source"]) == ("news", "console")
                        break
        # Another site's page is still refused.
        other = session.post(
            base + "/console/trigger",
            json={"app_id": app.app_id, "channel": "news", "event": "hi", "data": "{}"},
            headers={"Origin": "https://evil.example"},
            timeout=TIMEOUT,
        )
        assert other.status_code == 403
    finally:
        if nginx is not None:
            stop_process(nginx)
        server.stop()
