"""``appregistry serve``: the OAuth 2.0 endpoints on the registry's database, for development.

A standard-library HTTP server (``wsgiref``, one thread per request) runs
`appregistry.oauth2.make_wsgi_app`. It speaks plain HTTP: put it behind TLS, or keep it on
loopback, as the default host does.
"""

from __future__ import annotations

import argparse
import socketserver
import sys
import urllib.parse
from typing import TextIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import WSGIApplication

from .._registry import Registry
from .._validation import Problems

__all__ = ["add_arguments", "make_http_server", "serve"]

EXIT_OK, EXIT_USAGE = 0, 2


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow client does not hold up the others."""

    daemon_threads = True


class _Handler(WSGIRequestHandler):
    """Logs each request's method, path and status, never its query string."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The query string can carry a bearer token (accessRequestToken=...).
        # A request line that did not parse leaves no path or command behind.
        path = urllib.parse.urlsplit(getattr(self, "path", "")).path
        command = getattr(self, "command", None) or "-"
        self.log_message('"%s %s" %s %s', command, path, code, size)

    def log_error(self, format: str, *args: object) -> None:  # noqa: A002, ARG002 - base signature
        # send_error's messages quote the raw request line, query string (and token) included:
        # keep only the status code.
        code = args[0] if args and isinstance(args[0], int) else "-"
        self.log_message("refused a malformed request: status %s", code)


def make_http_server(app: WSGIApplication, host: str, port: int) -> WSGIServer:
    """A threading ``wsgiref`` server for ``app`` on ``host:port`` (port 0: any free port)."""
    return make_server(host, port, app, server_class=_ThreadingServer, handler_class=_Handler)


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError("must be from 0 to 65535 (0: any free port)")
    return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``appregistry serve``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=_port, default=8080, help="port to listen on (0: any free port)"
    )
    parser.add_argument(
        "--dev-account",
        metavar="ACCOUNT",
        help="DEVELOPMENT ONLY: treat every browser request as signed in to ACCOUNT",
    )


def _dev_warning(account: str) -> str:
    rule = "*" * 78
    return (
        f"{rule}\n"
        f"WARNING: --dev-account is on. EVERY browser request is treated as signed in\n"
        f"to account {account!r}: anyone who can reach this server can approve apps\n"
        f"for that account. For development and demos only.\n"
        f"{rule}\n"
    )


def serve(
    registry: Registry,
    *,
    host: str,
    port: int,
    dev_account: str | None = None,
    err: TextIO = sys.stderr,
) -> int:
    """Serve the OAuth 2.0 endpoints on ``registry`` until interrupted; return the exit status.

    Without ``dev_account`` nobody is signed in, so the consent page asks visitors to sign in;
    the token, revocation and introspection endpoints and ``/uapi/me`` work either way.
    """
    try:
        from ..oauth2 import SignedInUser, make_wsgi_app  # noqa: PLC0415 - an optional extra
    except ImportError:
        err.write("appregistry: serve needs the oauth2 extra: pip install 'appregistry[oauth2]'\n")
        return EXIT_USAGE
    user = None
    if dev_account is not None:
        problems = Problems()
        problems.identifier("--dev-account", dev_account)
        if problems:
            err.write("appregistry: --dev-account must be an account id\n")
            return EXIT_USAGE
        user = SignedInUser(account=dev_account, user=dev_account)
    app = make_wsgi_app(registry, current_user=lambda _environ: user)
    try:
        httpd = make_http_server(app, host, port)
    except OSError as exc:
        err.write(f"appregistry: cannot listen on {host}:{port}: {exc.strerror or exc}\n")
        return EXIT_USAGE
    with httpd:
        if dev_account is not None:
            err.write(_dev_warning(dev_account))
        base = f"http://{host}:{httpd.server_port}"
        err.write(
            f"appregistry: serving OAuth 2.0 on {base} "
            "(/oauth/authorize.php, /oauth/token.php, /oauth/revoke, /oauth/introspect, "
            "/uapi/me); Ctrl-C stops\n"
        )
        err.flush()
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            err.write("appregistry: stopped\n")
    return EXIT_OK
