"""``appregistry serve``: the pages and the OAuth 2.0 endpoints on one port, for development.

One ASGI application on uvicorn: the management pages (`appregistry.web`) under
``/manage/``, the OAuth 2.0 endpoints (`appregistry.oauth2`) at their usual paths, one
signed session cookie for both. It speaks plain HTTP: put it behind TLS, or keep it on
loopback, as the default host does.

Slow clients cannot pin the server: connections are bounded (`MAX_CONNECTIONS`, 503
beyond), idle keep-alive connections close after `KEEP_ALIVE` seconds, and a request body
must arrive within `BODY_TIMEOUT` seconds (408) before any worker thread sees it.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TextIO

from .._registry import Registry
from .._validation import Problems
from ..metrics import Metrics

if TYPE_CHECKING:
    from ..oauth2 import Throttling

__all__ = [
    "BODY_TIMEOUT",
    "DEFAULT_PORT",
    "KEEP_ALIVE",
    "MANAGE_PATH",
    "MAX_CONNECTIONS",
    "METRICS_PATH",
    "add_arguments",
    "build_app",
    "options_from",
    "serve",
]

EXIT_OK, EXIT_USAGE = 0, 2
#: The port ``serve`` listens on unless told.
DEFAULT_PORT: Final = 8080
#: Where the management pages are mounted.
MANAGE_PATH: Final = "/manage"
#: Where ``--metrics`` serves the Prometheus exposition.
METRICS_PATH: Final = "/metrics"
#: The most connections served at once; more are answered 503.
MAX_CONNECTIONS: Final = 200
#: Seconds an idle keep-alive connection stays open.
KEEP_ALIVE: Final = 5
#: Seconds a client has to send a request's body.
BODY_TIMEOUT: Final = 10.0
# The largest body read: the pages' forms and the OAuth 2.0 endpoints' both fit.
_MAX_BODY: Final = 128 * 1024

logger = logging.getLogger("appregistry.serve")


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError("must be from 0 to 65535 (0: any free port)")
    return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``appregistry serve``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help="port to listen on (default: %(default)s; 0: any free port)",
    )
    _add_operations_arguments(parser)
    dev = parser.add_mutually_exclusive_group()
    dev.add_argument(
        "--dev-sign-in",
        action="store_true",
        help="DEVELOPMENT ONLY: a sign-in page where anyone may sign in as the provider "
        "administrator or as a user of any account",
    )
    dev.add_argument(
        "--dev-account",
        metavar="ACCOUNT",
        help="DEVELOPMENT ONLY: treat every browser request as signed in to ACCOUNT",
    )


def _limit_argument(value: str) -> str:
    from limits import parse  # noqa: PLC0415 - the oauth2 extra

    try:
        parse(value)
    except ValueError:
        raise argparse.ArgumentTypeError("must read like 20/10minutes or '5 per minute'") from None
    return value


def _add_operations_arguments(parser: argparse.ArgumentParser) -> None:
    # Throttling and metrics (docs/operations.md).
    group = parser.add_argument_group("throttling and metrics (see docs/operations.md)")
    group.add_argument(
        "--no-throttle",
        action="store_true",
        help="do not throttle failed client authentication at the OAuth endpoints",
    )
    group.add_argument(
        "--throttle-failures",
        metavar="N/PERIOD",
        type=_limit_argument,
        help="failed authentications one app key may have (default: 20/10minutes)",
    )
    group.add_argument(
        "--throttle-address-failures",
        metavar="N/PERIOD",
        type=_limit_argument,
        help="failed authentications one client address may have (default: 100/10minutes)",
    )
    group.add_argument(
        "--throttle-redis",
        metavar="URL",
        help="count failures in Redis (redis://host:6379/0), shared by every server using it",
    )
    group.add_argument(
        "--throttle-redis-prefix",
        metavar="PREFIX",
        default="appregistry-throttle",
        help="prefix of the throttle's Redis keys (default: %(default)s)",
    )
    group.add_argument(
        "--trusted-proxy",
        metavar="CIDR",
        action="append",
        default=[],
        help="a reverse proxy's network: only its X-Forwarded-For is read (repeatable)",
    )
    group.add_argument(
        "--metrics",
        action="store_true",
        help="serve Prometheus metrics at /metrics (needs the metrics extra)",
    )
    group.add_argument(
        "--metrics-per-app",
        action="store_true",
        help="label token checks and grants with the app key in /metrics",
    )


def options_from(args: argparse.Namespace) -> dict[str, Any]:
    """The throttling and metrics keywords of `serve`, from its parsed arguments."""
    from ..oauth2 import Throttling  # noqa: PLC0415 - the oauth2 extra

    throttling = None
    if not args.no_throttle:
        limits = {
            name: value
            for name, value in (
                ("key_failures", args.throttle_failures),
                ("address_failures", args.throttle_address_failures),
            )
            if value is not None
        }
        throttling = Throttling(
            **limits,
            redis_url=args.throttle_redis,
            key_prefix=args.throttle_redis_prefix,
            trusted_proxies=args.trusted_proxy,
        )
    return {
        "throttling": throttling,
        "metrics": args.metrics or args.metrics_per_app,
        "metrics_per_app": args.metrics_per_app,
    }


def _dev_warning(what: str) -> str:
    rule = "*" * 78
    return f"{rule}\nWARNING: {what}\nFor development and demos only.\n{rule}\n"


def build_app(
    registry: Registry,
    *,
    dev_sign_in: bool = False,
    dev_account: str | None = None,
    reveal_secrets: bool = False,
    session_secret: str | None = None,
    throttling: Throttling | None = None,
    metrics: Metrics | None = None,
) -> Any:
    """The ASGI application ``serve`` runs: the pages, the OAuth 2.0 endpoints, one session.

    Args:
        dev_sign_in: Add the development sign-in page; its choice signs in both the pages
            and the consent page.
        dev_account: Treat every request as signed in as a user of this account.
        reveal_secrets: Offer "Reveal" on Edit App (the registry has an encryption key).
        session_secret: Signs the session cookie; by default a new one per process.
        throttling: How the OAuth endpoints throttle failed client authentication
            (``None``: not at all).
        metrics: Count on these metrics, and answer ``/metrics`` with their registry.
    """
    from starlette.applications import Starlette  # noqa: PLC0415 - the web extra
    from starlette.middleware import Middleware  # noqa: PLC0415
    from starlette.middleware.sessions import SessionMiddleware  # noqa: PLC0415
    from starlette.requests import Request  # noqa: PLC0415
    from starlette.responses import RedirectResponse  # noqa: PLC0415
    from starlette.routing import Mount, Route  # noqa: PLC0415

    from ..oauth2 import SignedInUser  # noqa: PLC0415 - the oauth2 extra
    from ..web import Role, WebUser, dev_session_user, make_app  # noqa: PLC0415

    current_user: Callable[[Request], WebUser | None]
    if dev_account is not None:
        fixed = WebUser(dev_account, Role.ACCOUNT, dev_account)
        current_user = lambda _request: fixed  # noqa: E731 - one line each way
    elif dev_sign_in:
        current_user = dev_session_user
    else:
        current_user = lambda _request: None  # noqa: E731

    def consent_user(request: Request) -> SignedInUser | None:
        user = current_user(request)
        return SignedInUser(account=user.account, user=user.name) if user else None

    pages = make_app(
        registry,
        current_user=current_user,
        reveal_secrets=reveal_secrets,
        unsafe_dev_sign_in=dev_sign_in,
    )
    oauth = _oauth_app(
        registry,
        consent_user,
        stylesheet_url=f"{MANAGE_PATH}/static/appregistry.css",
        login_url=f"{MANAGE_PATH}/sign-in" if dev_sign_in else None,
        throttling=throttling,
        metrics=metrics,
    )

    async def home(_request: Request) -> RedirectResponse:
        return RedirectResponse(f"{MANAGE_PATH}/", 303)

    routes: list[Any] = [Route("/", home)]
    if metrics is not None:
        from prometheus_client import make_asgi_app as metrics_app  # noqa: PLC0415

        exposition = _Asgi(metrics_app(registry=metrics.registry))
        routes.append(Route(METRICS_PATH, exposition, methods=["GET"]))

    return Starlette(
        routes=[*routes, Mount(MANAGE_PATH, app=pages), Mount("", app=oauth)],
        middleware=[
            Middleware(_AccessLog),
            Middleware(_BufferedBody),
            # The one session of the pages (which use it when they find it) and the consent page.
            Middleware(
                SessionMiddleware,
                secret_key=session_secret or secrets.token_urlsafe(32),
                session_cookie="appregistry_session",
                max_age=8 * 60 * 60,
                same_site="lax",
            ),
        ],
    )


def _oauth_app(
    registry: Registry,
    consent_user: Callable[[Any], Any],
    *,
    stylesheet_url: str,
    login_url: str | None,
    throttling: Throttling | None,
    metrics: Metrics | None,
) -> Any:
    from ..oauth2 import make_asgi_app  # noqa: PLC0415 - the oauth2 extra

    # One implementation of the endpoints: the ASGI adapter runs the same core as the WSGI
    # app, in a worker thread, and its consent page reads the pages' session.
    return make_asgi_app(
        registry,
        current_user=consent_user,
        stylesheet_url=stylesheet_url,
        login_url=login_url,
        throttling=throttling,
        metrics=metrics,
    )


class _Asgi:
    """An ASGI app as a route's endpoint (Starlette takes a plain function for a view)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class _AccessLog:
    """Logs each request's method, path and status; never the query string (tokens go there)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def record(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            path = scope.get("path", "").encode("unicode_escape").decode("ascii")
            logger.info('"%s %s" %s', scope.get("method", "-"), path, status)


class _BufferedBody:
    """Reads a request's whole body, within `BODY_TIMEOUT`, before the app sees it.

    Worker threads (the pages' views, the WSGI bridge) then never wait on a slow client.
    Bodies over 128 KiB get 413 at once; both apps' own limits are below that.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        import anyio  # noqa: PLC0415 - comes with Starlette

        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "OPTIONS"}:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        with anyio.move_on_after(BODY_TIMEOUT) as timer:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > _MAX_BODY:
                    await _plain(send, 413, b"The request body is too large.")
                    return
                if not message.get("more_body", False):
                    break
        if timer.cancelled_caught:
            await _plain(send, 408, b"The request body did not arrive in time.")
            return
        body = b"".join(chunks)
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _plain(send: Any, status: int, text: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": text})


def serve(
    registry: Registry,
    *,
    host: str,
    port: int,
    dev_account: str | None = None,
    dev_sign_in: bool = False,
    reveal_secrets: bool = False,
    throttling: Throttling | None = None,
    metrics: bool = False,
    metrics_per_app: bool = False,
    err: TextIO = sys.stderr,
) -> int:
    """Serve the pages and the OAuth 2.0 endpoints on ``registry`` until interrupted.

    Without ``dev_sign_in`` or ``dev_account`` nobody is signed in: the pages answer 401 and
    the consent page asks visitors to sign in; the token, revocation and introspection
    endpoints and ``/uapi/me`` work either way.

    Returns:
        The exit status.
    """
    try:
        import uvicorn  # noqa: PLC0415 - the web extra
    except ImportError:
        err.write("appregistry: serve needs the web extra: pip install 'appregistry[web]'\n")
        return EXIT_USAGE
    if dev_account is not None:
        problems = Problems()
        problems.identifier("--dev-account", dev_account)
        if problems:
            err.write("appregistry: --dev-account must be an account id\n")
            return EXIT_USAGE
    try:
        counted = Metrics(per_app=metrics_per_app) if metrics else None
    except ImportError:
        err.write(
            "appregistry: --metrics needs the metrics extra: pip install 'appregistry[metrics]'\n"
        )
        return EXIT_USAGE
    app = build_app(
        registry,
        dev_sign_in=dev_sign_in,
        dev_account=dev_account,
        reveal_secrets=reveal_secrets,
        throttling=throttling,
        metrics=counted,
    )
    try:
        sock = socket.create_server((host, port))
    except OSError as exc:
        err.write(f"appregistry: cannot listen on {host}:{port}: {exc.strerror or exc}\n")
        return EXIT_USAGE
    _log_to(err)
    if dev_sign_in:
        err.write(
            _dev_warning(
                "--dev-sign-in is on. ANYONE who can reach this server can sign in as the\n"
                "provider administrator or as a user of any account, and approve apps."
            )
        )
    if dev_account is not None:
        err.write(
            _dev_warning(
                f"--dev-account is on. EVERY browser request is treated as signed in\n"
                f"to account {dev_account!r}: anyone who can reach this server can approve\n"
                "apps for that account."
            )
        )
    base = f"http://{host}:{sock.getsockname()[1]}"
    err.write(
        f"appregistry: serving the pages on {base}{MANAGE_PATH}/ and OAuth 2.0 on {base} "
        "(/oauth/authorize.php, /oauth/token.php, /oauth/revoke, /oauth/introspect, "
        "/uapi/me); Ctrl-C stops\n"
    )
    if counted is not None:
        err.write(f"appregistry: Prometheus metrics on {base}{METRICS_PATH}\n")
    if throttling is None:
        err.write("appregistry: throttling is off (--no-throttle)\n")
    err.flush()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            http="h11",
            ws="none",
            lifespan="off",
            loop="asyncio",
            access_log=False,
            log_config=None,
            server_header=False,
            limit_concurrency=MAX_CONNECTIONS,
            timeout_keep_alive=KEEP_ALIVE,
            timeout_graceful_shutdown=5,
        )
    )
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    err.write("appregistry: stopped\n")
    return EXIT_OK


def _log_to(err: TextIO) -> None:
    # The access log and uvicorn's own warnings go to ``err``, one line each.
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    for name in ("appregistry", "uvicorn.error"):
        named = logging.getLogger(name)
        named.addHandler(handler)
        named.setLevel(logging.INFO)
