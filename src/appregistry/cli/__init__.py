"""The ``appregistry`` command line: every action of the Apps pages, for terminals and scripts.

Exit status: 0 done (or token allowed); 1 denied, or a name that does not exist; 2 bad input
or a database that cannot be opened. With ``--json`` each call prints one JSON document.

The database is ``--database URL``, else ``$APPREGISTRY_DATABASE``, else
``sqlite:///appregistry.sqlite3`` in the working directory. ``$APPREGISTRY_PEPPER`` and
``$APPREGISTRY_ENCRYPTION_KEY`` set the registry's digest pepper and secret-encryption key;
the latter may list several keys, comma-separated, newest first (key rotation).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TextIO

from .._open import open_registry
from .._registry import DEFAULT_PURGE_REST, Registry
from .._validation import MAX_PER_PAGE
from ..errors import (
    AppRegistryError,
    ConfigurationError,
    Denied,
    FieldProblem,
    LimitExceeded,
    NotFound,
    SecretNotRetrievable,
    StorageError,
    ValidationError,
)
from . import _serve
from ._commands import COMMANDS, Outcome, UsageError

__all__ = ["DEFAULT_DATABASE", "build_parser", "execute", "main"]

#: The database used when neither --database nor $APPREGISTRY_DATABASE is given.
DEFAULT_DATABASE = "sqlite:///appregistry.sqlite3"
EXIT_OK, EXIT_DENIED, EXIT_USAGE = 0, 1, 2

_EPILOG = "Exit status: 0 done or allowed, 1 denied or not found, 2 bad input or database."


def _per_page(value: str) -> int:
    number = int(value)
    if not 1 <= number <= MAX_PER_PAGE:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_PER_PAGE} (10, 25 or 100)")
    return number


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


#: The longest rest between purge batches, in multiples of a batch's time.
_MAX_REST = 100.0

_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _duration(value: str) -> timedelta:
    """A duration such as ``7d``, ``12h``, ``90m``, ``2w`` or ``30s``.

    >>> _duration("7d")
    datetime.timedelta(days=7)
    """
    number, unit = value[:-1], value[-1:].lower()
    if not number.isdigit() or unit not in _DURATION_UNITS or int(number) < 1:
        raise argparse.ArgumentTypeError("must be a whole number and a unit: s, m, h, d or w")
    return timedelta(**{_DURATION_UNITS[unit]: int(number)})


def _rest(value: str) -> float:
    """A pause between purge batches, as a multiple of the batch's time: 0 or more.

    >>> _rest("0.5")
    0.5
    """
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number <= _MAX_REST:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to {_MAX_REST}")
    return number


def _instant(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "must be an ISO 8601 date and time with a zone, e.g. 2026-05-01T12:00:00+00:00"
        ) from None


# An app's fields as ``apps register`` and ``apps edit`` take them: flag, metavar, help, and
# whether registering needs it.
_APP_FIELDS = (
    ("--name", "NAME", "", True),
    ("--homepage", "URL", "", True),
    ("--admin-email", "EMAIL", "", True),
    ("--redirect-url", "URL", "https only", True),
    ("--description", "TEXT", "", False),
    ("--image-url", "URL", "", False),
    ("--admin-phone", "PHONE", "international, e.g. +40 21 312 0000", False),
)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in descriptions as written."""


def build_parser() -> argparse.ArgumentParser:  # noqa: PLR0915 - one declarative table
    """The argument parser of ``appregistry``, with help and an example on every level."""
    # Global options are accepted before or after the subcommand; SUPPRESS keeps a leaf's
    # absent option from overwriting one given before the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="sqlite:///PATH, postgresql://USER@HOST/DB or memory: "
        f"(default: $APPREGISTRY_DATABASE or {DEFAULT_DATABASE})",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document"
    )
    root = argparse.ArgumentParser(
        prog="appregistry",
        description="Manage third-party apps, their installations and access tokens.\n\n"
        "example:\n  appregistry demo\n  appregistry --database sqlite:///apps.db apps list",
        epilog=_EPILOG,
        formatter_class=_Formatter,
        parents=[common],
    )
    groups = root.add_subparsers(dest="group", metavar="COMMAND", required=True)

    def group(name: str, summary: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        parser = groups.add_parser(name, help=summary, description=summary)
        return parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def leaf(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        summary: str,
        example: str,
        *positionals: str,
    ) -> argparse.ArgumentParser:
        """A command; each of ``positionals`` (key, account) is an argument named in capitals."""
        parser = parent.add_parser(
            name,
            help=summary,
            description=f"{summary}\n\nexample:\n  {example}",
            epilog=_EPILOG,
            formatter_class=_Formatter,
            parents=[common],
        )
        for positional in positionals:
            parser.add_argument(positional, metavar=positional.upper())
        return parser

    def app_fields(parser: argparse.ArgumentParser, *, required: bool) -> None:
        """An app's fields, with the same metavars and help in ``register`` and ``edit``."""
        for flag, metavar, summary, needed in _APP_FIELDS:
            parser.add_argument(
                flag, required=required and needed, metavar=metavar, help=summary or None
            )

    def paging(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--search", metavar="TEXT", help="case-insensitive text to match")
        parser.add_argument("--page", type=_positive, default=1, metavar="N")
        parser.add_argument(
            "--per-page", type=_per_page, default=10, metavar="N", help="10, 25 or 100 (max 1000)"
        )
        cursor = parser.add_mutually_exclusive_group()
        cursor.add_argument(
            "--after",
            metavar="CURSOR",
            help="the page after the one whose JSON gave this 'after' (with --page N+1)",
        )
        cursor.add_argument(
            "--before",
            metavar="CURSOR",
            help="the page before the one whose JSON gave this 'before' (with --page N-1)",
        )

    # apps ---------------------------------------------------------------------------------
    apps = group("apps", "register, list, edit, enable, disable and remove apps")
    p = leaf(
        apps,
        "register",
        "Register an app; its key and secret are printed once.",
        "appregistry apps register --owner acme --name MyApp --homepage http://bücher.example/ "
        "--admin-email admin@exämple.com --redirect-url https://example.com/MyApp/handler",
    )
    p.add_argument("--owner", required=True, metavar="ACCOUNT")
    app_fields(p, required=True)
    p.add_argument("--trusted", action="store_true", help="may get tokens by key and secret")
    p.add_argument("--import-key", metavar="KEY", help="keep an existing 32-character key")
    p.add_argument(
        "--import-secret", metavar="SECRET", help="keep an existing secret ('-' reads stdin)"
    )

    p = leaf(apps, "list", "List registered apps with their Instances.", "appregistry apps list")
    p.add_argument("--owner", metavar="ACCOUNT", help="only this owner's apps")
    paging(p)

    leaf(apps, "show", "Show every field of an app.", "appregistry apps show KEY", "key")

    p = leaf(
        apps,
        "edit",
        "Change an app's fields; those not given stay. An empty value clears an optional one.",
        "appregistry apps edit KEY --name 'My App' --untrusted",
        "key",
    )
    app_fields(p, required=False)
    trust = p.add_mutually_exclusive_group()
    trust.add_argument(
        "--trusted",
        dest="trusted",
        action="store_true",
        default=None,
        help="may get tokens by key and secret",
    )
    trust.add_argument(
        "--untrusted", dest="trusted", action="store_false", help="gets tokens only on approval"
    )

    for name, summary in (
        ("enable", "Enable an app: unexpired tokens work again."),
        ("disable", "Disable an app: no new tokens, old ones do not act."),
        ("regenerate-secret", "New secret; the old one and all the app's tokens stop working."),
    ):
        leaf(apps, name, summary, f"appregistry apps {name} KEY", "key")
    p = leaf(
        apps,
        "remove",
        "Remove apps, with their installations and tokens: all of them, or none if a key "
        "names no app.",
        "appregistry apps remove KEY [KEY ...]",
    )
    p.add_argument("keys", nargs="+", metavar="KEY")

    p = leaf(
        apps,
        "rotate-secret",
        "New secret; the old one keeps working until a deadline (at most 30 days) and every "
        "token is kept.",
        "appregistry apps rotate-secret KEY --grace 7d",
        "key",
    )
    deadline = p.add_mutually_exclusive_group(required=True)
    deadline.add_argument(
        "--grace", type=_duration, metavar="DURATION", help="for how long: 7d, 12h, 90m, 2w"
    )
    deadline.add_argument(
        "--until", type=_instant, metavar="ISO8601", help="until when, with a time zone"
    )

    p = leaf(
        apps,
        "reencrypt-secrets",
        "Re-encrypt every stored secret with the newest key of $APPREGISTRY_ENCRYPTION_KEY "
        "(comma-separated, newest first); then the older keys can go.",
        "APPREGISTRY_ENCRYPTION_KEY=NEW,OLD appregistry apps reencrypt-secrets",
    )
    p.add_argument("--batch-size", type=_positive, default=100, metavar="N")

    # accounts -----------------------------------------------------------------------------
    accounts = group("accounts", "the provider's permission for an account to use apps")
    p = leaf(
        accounts,
        "permit",
        "Let an account use apps.",
        "appregistry accounts permit org-1 --by sp-admin",
        "account",
    )
    p.add_argument("--by", required=True, metavar="USER", help="who grants it")
    leaf(
        accounts,
        "forbid",
        "Stop an account using apps (its tokens stop acting).",
        "appregistry accounts forbid org-1",
        "account",
    )
    p = leaf(
        accounts,
        "list",
        "List the accounts permitted to use apps, with who permitted each and when.",
        "appregistry accounts list --search org",
    )
    paging(p)

    # installs -----------------------------------------------------------------------------
    installs = group("installs", "apps installed (authorized) on accounts")
    p = leaf(
        installs,
        "add",
        "Install an app on an account.",
        "appregistry installs add KEY org-1 --by alice",
        "key",
        "account",
    )
    p.add_argument("--by", required=True, metavar="USER", help="the user authorizing it")
    p = leaf(
        installs,
        "list",
        "List an account's App Management: the apps installed on it, and its own apps that "
        "have live tokens for it, with their Access Tokens.",
        "appregistry installs list org-1",
        "account",
    )
    paging(p)
    p = leaf(
        installs,
        "accounts",
        "List the accounts an app is installed on.",
        "appregistry installs accounts KEY",
        "key",
    )
    paging(p)
    for name, summary in (
        ("suspend", "Suspend an app on one account."),
        ("resume", "Resume a suspended app on one account."),
    ):
        leaf(installs, name, summary, f"appregistry installs {name} KEY org-1", "key", "account")
    p = leaf(
        installs,
        "remove",
        "Uninstall apps from an account; their tokens there are removed. All of them, or "
        "none if one is not installed there.",
        "appregistry installs remove KEY [KEY ...] org-1",
    )
    p.add_argument("keys", nargs="+", metavar="KEY")
    p.add_argument("account", metavar="ACCOUNT")

    # tokens -------------------------------------------------------------------------------
    tokens = group("tokens", "issue, check, list and remove access tokens")
    p = leaf(
        tokens,
        "issue",
        "Issue an access token: trusted apps by key and secret, or for an account that "
        "installed the app, on the approval of one of its users (--approved-by).",
        "appregistry tokens issue --key KEY --secret - --account org-1 --approved-by alice "
        "--user-agent curl/8",
    )
    p.add_argument("--key", required=True)
    p.add_argument("--secret", required=True, help="the app secret ('-' reads stdin)")
    p.add_argument("--account", metavar="ACCOUNT", help="act for this account")
    p.add_argument(
        "--approved-by",
        metavar="USER",
        help="the account's user who approved the token (required with --account)",
    )
    p.add_argument("--user-agent", metavar="UA")
    p = leaf(
        tokens,
        "list",
        "List an app's live tokens on an account, or on every account without one.",
        "appregistry tokens list KEY org-1 --search perl  |  appregistry tokens list KEY",
        "key",
    )
    p.add_argument("account", nargs="?", metavar="ACCOUNT")
    p.add_argument(
        "--order",
        choices=["expires", "last_used"],
        default="expires",
        help="soonest expiry first (the default), or most recently used first",
    )
    paging(p)
    p = leaf(
        tokens,
        "remove",
        "Remove tokens by id, or every token of an app on an account with --all.",
        "appregistry tokens remove TOKEN_ID ...  |  appregistry tokens remove --all KEY org-1",
    )
    p.add_argument("ids", nargs="*", metavar="TOKEN_ID")
    p.add_argument("--all", action="store_true", help="arguments are KEY ACCOUNT")
    p = leaf(
        tokens,
        "check",
        "May this token act now? Exit 0 if allowed, 1 if not; prints the reason.",
        "appregistry tokens check - < token.txt",
    )
    p.add_argument("token", metavar="TOKEN", help="the access token ('-' reads stdin)")
    p = leaf(
        tokens,
        "purge",
        "Delete expired access tokens, refresh tokens and codes, and previous secrets whose "
        "grace has ended, in short batches.",
        "appregistry tokens purge --retention 30d",
    )
    p.add_argument(
        "--batch-size", type=_positive, default=10_000, metavar="N", help="rows of each kind"
    )
    p.add_argument(
        "--retention",
        type=_duration,
        metavar="DURATION",
        help="keep rows expired less than this long ago, for audit: 30d, 12h, 2w",
    )
    p.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    p.add_argument(
        "--rest",
        type=_rest,
        default=DEFAULT_PURGE_REST,
        metavar="R",
        help="after each batch, wait R times as long as it took (0: flat out)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="a progress bar on standard error (default: on a terminal only)",
    )

    # demo ---------------------------------------------------------------------------------
    leaf(
        groups,
        "demo",
        "Walk through registering, installing and using an app, on a new SQLite file in a "
        "temporary folder.",
        "appregistry demo",
    )

    # serve --------------------------------------------------------------------------------
    _serve.add_arguments(
        leaf(
            groups,
            "serve",
            "Serve the management pages and the OAuth 2.0 endpoints (development and demos).",
            "appregistry serve --port 8080 --dev-sign-in",
        )
    )
    return root


def _database(args: argparse.Namespace) -> str:
    return getattr(args, "database", None) or os.environ.get(
        "APPREGISTRY_DATABASE", DEFAULT_DATABASE
    )


def open_cli_registry(url: str) -> Registry:
    """The registry the CLI works on, configured from the environment."""
    pepper = os.environ.get("APPREGISTRY_PEPPER")
    # Several keys, newest first, while the key is being rotated; Fernet keys have no commas.
    keys = os.environ.get("APPREGISTRY_ENCRYPTION_KEY", "").split(",")
    return open_registry(
        url,
        pepper=pepper.encode() if pepper else None,
        secret_encryption_key=[key.strip() for key in keys if key.strip()] or None,
    )


def execute(registry: Registry, args: argparse.Namespace) -> Outcome:
    """Run the parsed command on ``registry``; errors become outcomes with their exit status."""
    handler = COMMANDS[f"{args.group} {args.action}"]
    try:
        return handler(registry, args)
    except ValidationError as exc:
        lines = [f"{p.field}: {_said_once(p)} [{p.code}]" for p in exc.problems]
        data = {
            "error": "validation",
            "problems": [
                {"field": p.field, "code": p.code, "message": p.message} for p in exc.problems
            ],
        }
        return Outcome("\n".join(lines), data, EXIT_USAGE)
    except UsageError as exc:
        return Outcome(str(exc), {"error": "usage", "message": str(exc)}, EXIT_USAGE)
    except Denied as exc:
        reason = str(exc.decision.reason)
        return Outcome(
            f"denied: {reason} ({exc})",
            {"error": "denied", "allowed": False, "reason": reason, "message": str(exc)},
            EXIT_DENIED,
        )
    except (NotFound, LimitExceeded, SecretNotRetrievable) as exc:
        kind = "not_found"
        if isinstance(exc, LimitExceeded):
            kind = "limit_exceeded"
        elif isinstance(exc, SecretNotRetrievable):
            kind = "secret_not_retrievable"
        return Outcome(str(exc), {"error": kind, "message": str(exc)}, EXIT_DENIED)


def _said_once(problem: FieldProblem) -> str:
    """The problem's message without the field's name, which the line already starts with.

    >>> _said_once(FieldProblem("admin_email", "invalid_email", "admin_email is not valid"))
    'not valid'
    >>> _said_once(FieldProblem("name", "too_long", "name must be at most 80 characters"))
    'must be at most 80 characters'
    >>> _said_once(FieldProblem("homepage", "invalid_host", "label 'a' mixes scripts"))
    "label 'a' mixes scripts"
    """
    message = problem.message
    for prefix in (f"{problem.field} is ", f"{problem.field} "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _emit(outcome: Outcome, *, as_json: bool, out: TextIO, err: TextIO) -> None:
    if as_json:
        out.write(json.dumps(outcome.data, ensure_ascii=False, indent=2) + "\n")
        if outcome.exit_code == EXIT_USAGE or "error" in (outcome.data or {}):
            err.write(outcome.text + "\n")
    elif outcome.exit_code != EXIT_OK and "error" in (outcome.data or {}):
        err.write(outcome.text + "\n")
    else:
        out.write(outcome.text + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``appregistry`` with ``argv`` (default: the process arguments); return its status."""
    args = build_parser().parse_args(argv)
    as_json = bool(getattr(args, "json", False))
    if args.group == "demo":
        from ._demo import run_demo  # noqa: PLC0415 - _demo imports this module

        return run_demo(sys.stdout)
    url = _database(args)
    try:
        registry = open_cli_registry(url)
    except ConfigurationError as exc:
        # A pepper or key that is not the database's own: say so, and how to rotate.
        return _fail(f"configuration error: {exc}", as_json=as_json, kind="configuration")
    except AppRegistryError as exc:
        return _fail(f"cannot open the database: {exc}", as_json=as_json)
    except ValueError as exc:
        # A malformed $APPREGISTRY_ENCRYPTION_KEY or URL option; the message holds no key.
        return _fail(f"cannot open the registry: {exc}", as_json=as_json)
    if args.group == "serve":
        try:
            return _serve.serve(
                registry,
                host=args.host,
                port=args.port,
                dev_account=args.dev_account,
                dev_sign_in=args.dev_sign_in,
                reveal_secrets=bool(os.environ.get("APPREGISTRY_ENCRYPTION_KEY", "").strip()),
                **_serve.options_from(args),
            )
        finally:
            registry.close()
    try:
        outcome = execute(registry, args)
    except StorageError as exc:
        return _fail(f"storage error: {exc}", as_json=as_json)
    finally:
        registry.close()
    _emit(outcome, as_json=as_json, out=sys.stdout, err=sys.stderr)
    return outcome.exit_code


def _fail(message: str, *, as_json: bool, kind: str = "storage") -> int:
    if as_json:
        sys.stdout.write(json.dumps({"error": kind, "message": message}) + "\n")
    sys.stderr.write(f"appregistry: {message}\n")
    return EXIT_USAGE
