"""The CLI's subcommands: each takes the Registry and parsed arguments and returns an Outcome.

Handlers do no printing, so the demo and the tests run exactly the code `appregistry` runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from .._records import ImportedCredentials
from .._registry import UNSET, PurgeCounts, Registry
from ..errors import AppRegistryError, StorageError, ValidationError
from . import _progress, _render

__all__ = ["COMMANDS", "Outcome", "UsageError"]

#: Exit status of a denied check or a name that does not exist.
EXIT_DENIED = 1
#: Exit status of bad input or configuration.
EXIT_USAGE = 2


@attrs.frozen
class Outcome:
    """What a command produced: text for people, a JSON-ready document, an exit status."""

    text: str
    data: Any
    exit_code: int = 0


Handler = Callable[[Registry, argparse.Namespace], Outcome]


def _read_secret(value: str) -> str:
    # "-" reads from standard input, so secrets and tokens stay out of `ps` and shell history.
    return sys.stdin.readline().strip() if value == "-" else value


def _optional(value: str | None) -> object:
    # Absent flag: leave the field as it is. An empty string clears an optional field.
    if value is None:
        return UNSET
    return value or None


# -- apps -------------------------------------------------------------------------------------


def apps_register(registry: Registry, args: argparse.Namespace) -> Outcome:
    """Register an app and show its key and secret, once."""
    credentials = None
    if args.import_key is not None or args.import_secret is not None:
        credentials = ImportedCredentials(
            key=args.import_key or "", secret=_read_secret(args.import_secret or "")
        )
    new = registry.register_app(
        args.owner,
        name=args.name,
        homepage=args.homepage,
        admin_email=args.admin_email,
        redirect_url=args.redirect_url,
        description=args.description,
        image_url=args.image_url,
        admin_phone=args.admin_phone,
        trusted=args.trusted,
        credentials=credentials,
    )
    text = "\n".join(
        [
            f"Registered {new.app.name}",
            f"App ID/key  {new.app.key}",
            f"App secret  {new.secret}",
            "Keep the secret now: it is shown only this once.",
        ]
    )
    data = {"app": _render.jsonable(new.app), "key": new.app.key, "secret": new.secret}
    return Outcome(text, data)


def _paging(args: argparse.Namespace) -> dict[str, Any]:
    """The paging options every list takes."""
    return {
        "search": args.search,
        "page": args.page,
        "per_page": args.per_page,
        "after": args.after,
        "before": args.before,
    }


def apps_list(registry: Registry, args: argparse.Namespace) -> Outcome:
    """The registered apps (or one owner's) with their Instances."""
    page = registry.list_apps(owner=args.owner, **_paging(args))
    return Outcome(_render.apps_table(page), _render.page_json(page))


def apps_show(registry: Registry, args: argparse.Namespace) -> Outcome:
    """Every field of one app."""
    app = registry.get_app(args.key)
    return Outcome(_render.app_detail(app), _render.jsonable(app))


def apps_edit(registry: Registry, args: argparse.Namespace) -> Outcome:
    """Change the fields given; the others stay."""
    changes: dict[str, Any] = {
        "name": args.name if args.name is not None else UNSET,
        "homepage": args.homepage if args.homepage is not None else UNSET,
        "admin_email": args.admin_email if args.admin_email is not None else UNSET,
        "redirect_url": args.redirect_url if args.redirect_url is not None else UNSET,
        "description": _optional(args.description),
        "image_url": _optional(args.image_url),
        "admin_phone": _optional(args.admin_phone),
        "trusted": args.trusted if args.trusted is not None else UNSET,
    }
    app = registry.update_app(args.key, **changes)
    return Outcome(_render.app_detail(app), _render.jsonable(app))


def apps_enable(registry: Registry, args: argparse.Namespace) -> Outcome:
    """Enable an app: its unexpired tokens work again."""
    app = registry.enable_app(args.key)
    return Outcome(f"{app.name} ({app.key}) is enabled", _render.jsonable(app))


def apps_disable(registry: Registry, args: argparse.Namespace) -> Outcome:
    """Disable an app: it can neither obtain nor use tokens until enabled."""
    app = registry.disable_app(args.key)
    return Outcome(f"{app.name} ({app.key}) is disabled", _render.jsonable(app))


def apps_remove(registry: Registry, args: argparse.Namespace) -> Outcome:
    """Remove apps with their installations and tokens: all of them, or none."""
    keys = list(dict.fromkeys(args.keys))
    registry.remove_apps(keys)
    text = f"Removed app {keys[0]}" if len(keys) == 1 else f"Removed {len(keys)} apps"
    return Outcome(text, {"removed": keys})


def apps_regenerate_secret(registry: Registry, args: argparse.Namespace) -> Outcome:
    """Make a new secret; the old one and every token of the app stop working."""
    new = registry.regenerate_secret(args.key)
    text = "\n".join(
        [
            f"New secret for {new.app.name}; the old secret and all its access tokens are void.",
            f"App ID/key  {new.app.key}",
            f"App secret  {new.secret}",
        ]
    )
    return Outcome(text, {"key": new.app.key, "secret": new.secret})


def apps_rotate_secret(registry: Registry, args: argparse.Namespace) -> Outcome:
    """Make a new secret; the old one keeps working until the deadline, tokens are kept."""
    until = args.until if args.until is not None else datetime.now(UTC) + args.grace
    new = registry.rotate_secret(args.key, old_secret_valid_until=until)
    shown = until.astimezone(UTC).isoformat()
    text = "\n".join(
        [
            f"New secret for {new.app.name}; access tokens are kept.",
            f"The previous secret works until {shown}.",
            f"App ID/key  {new.app.key}",
            f"App secret  {new.secret}",
        ]
    )
    data = {"key": new.app.key, "secret": new.secret, "old_secret_valid_until": shown}
    return Outcome(text, data)


def apps_reencrypt_secrets(registry: Registry, args: argparse.Namespace) -> Outcome:
    """Re-encrypt every stored secret with the newest encryption key."""
    try:
        count = registry.reencrypt_secrets(batch_size=args.batch_size)
    except ValueError:
        raise UsageError(
            "apps reencrypt-secrets needs $APPREGISTRY_ENCRYPTION_KEY: the keys, "
            "comma-separated, newest first"
        ) from None
    except (StorageError, ValidationError):
        raise
    except AppRegistryError as exc:
        # A secret that no configured key decrypts: a key was dropped too soon.
        return Outcome(str(exc), {"error": "not_decryptable", "message": str(exc)}, EXIT_USAGE)
    return Outcome(f"{count} secret(s) re-encrypted with the newest key", {"reencrypted": count})


# -- accounts and installations -----------------------------------------------------------------


def accounts_permit(registry: Registry, args: argparse.Namespace) -> Outcome:
    """Let an account use apps."""
    permission = registry.permit_account(args.account, by=args.by)
    return Outcome(
        f"Account {permission.account} may use apps (granted by {permission.granted_by})",
        _render.jsonable(permission),
    )


def accounts_forbid(registry: Registry, args: argparse.Namespace) -> Outcome:
    """Withdraw an account's permission to use apps."""
    registry.forbid_account(args.account)
    return Outcome(
        f"Account {args.account} may no longer use apps",
        {"account": args.account, "permitted": False},
    )


def accounts_list(registry: Registry, args: argparse.Namespace) -> Outcome:
    """The accounts permitted to use apps, with who permitted each and when."""
    page = registry.list_permissions(**_paging(args))
    return Outcome(_render.permissions_table(page), _render.page_json(page))


def installs_add(registry: Registry, args: argparse.Namespace) -> Outcome:
    """Install (authorize) an app on an account."""
    installation = registry.install_app(args.key, args.account, by=args.by)
    return Outcome(
        f"Installed {installation.app_key} on {installation.account} "
        f"(by {installation.installed_by})",
        _render.jsonable(installation),
    )


def installs_list(registry: Registry, args: argparse.Namespace) -> Outcome:
    """The apps installed on an account, with their Access Tokens counts."""
    page = registry.list_installations(args.account, **_paging(args))
    return Outcome(_render.installations_table(page), _render.page_json(page))


def installs_accounts(registry: Registry, args: argparse.Namespace) -> Outcome:
    """The accounts an app is installed on."""
    page = registry.list_app_installations(args.key, **_paging(args))
    return Outcome(_render.app_installations_table(page), _render.page_json(page))


def installs_suspend(registry: Registry, args: argparse.Namespace) -> Outcome:
    """Suspend an app on one account."""
    installation = registry.suspend_installation(args.key, args.account)
    return Outcome(f"Suspended {args.key} on {args.account}", _render.jsonable(installation))


def installs_resume(registry: Registry, args: argparse.Namespace) -> Outcome:
    """Resume a suspended app on one account."""
    installation = registry.resume_installation(args.key, args.account)
    return Outcome(f"Resumed {args.key} on {args.account}", _render.jsonable(installation))


def installs_remove(registry: Registry, args: argparse.Namespace) -> Outcome:
    """Uninstall apps from an account, removing that account's tokens for them."""
    keys = list(dict.fromkeys(args.keys))
    removed = registry.uninstall_apps(keys, args.account)
    named = keys[0] if len(keys) == 1 else f"{len(keys)} apps"
    return Outcome(
        f"Removed {named} from {args.account} ({removed} token(s) removed)",
        {"keys": keys, "account": args.account, "tokens_removed": removed},
    )


# -- tokens -----------------------------------------------------------------------------------


def tokens_issue(registry: Registry, args: argparse.Namespace) -> Outcome:
    """Issue an access token for the app (key and secret), as the token endpoint would."""
    issued = registry.issue_token(
        args.key,
        _read_secret(args.secret),
        account=args.account,
        approved_by=args.approved_by,
        user_agent=args.user_agent,
    )
    record = issued.record
    text = "\n".join(
        [
            f"Access token  {issued.token}",
            f"Token ID      {record.token_id}",
            f"Account       {record.account}",
            f"Expires       {record.expires_at.isoformat()}",
        ]
    )
    data = {
        "token": issued.token,
        "token_id": record.token_id,
        "key": record.app_key,
        "account": record.account,
        "grant": record.grant.value,
        "expires_at": record.expires_at.isoformat(),
        "expires_in": issued.expires_in(record.issued_at),
    }
    return Outcome(text, data)


def tokens_list(registry: Registry, args: argparse.Namespace) -> Outcome:
    """The live tokens of an app on an account, or on every account: Expires, Last used..."""
    page = registry.list_tokens(args.key, args.account, order=args.order, **_paging(args))
    table = _render.tokens_table(page, accounts=args.account is None)
    return Outcome(table, _render.page_json(page))


def tokens_remove(registry: Registry, args: argparse.Namespace) -> Outcome:
    """Remove the selected tokens, or with --all every token of an app on an account."""
    if args.all:
        if len(args.ids) != 2:
            raise UsageError("tokens remove --all needs KEY ACCOUNT")
        key, account = args.ids
        removed = registry.remove_all_tokens(key, account)
    else:
        if not args.ids:
            raise UsageError("tokens remove needs at least one TOKEN_ID (or --all KEY ACCOUNT)")
        removed = registry.remove_tokens(args.ids)
    return Outcome(f"{removed} token(s) removed", {"removed": removed})


def tokens_check(registry: Registry, args: argparse.Namespace) -> Outcome:
    """May this token act now? Exit status 0 if allowed, 1 if not, with the reason."""
    check = registry.check_token(_read_secret(args.token))
    data: dict[str, Any] = {"allowed": check.allowed, "reason": str(check.reason)}
    if check.token is not None:
        data |= {
            "token_id": check.token.token_id,
            "key": check.token.app_key,
            "account": check.token.account,
            "expires_at": check.token.expires_at.isoformat(),
            # As stored before this check (see appregistry.LastUse), or None.
            "last_used_at": _render.jsonable(check.token.last_used_at),
        }
    text = f"denied: {check.reason}"
    if check.allowed and check.token is not None:
        text = f"allowed: acts for {check.token.account} until {check.token.expires_at.isoformat()}"
    return Outcome(text, data, 0 if check.allowed else EXIT_DENIED)


def tokens_purge(registry: Registry, args: argparse.Namespace) -> Outcome:
    """Delete expired rows in bounded batches, or count them (``--dry-run``).

    The one handler that reports while it works: a progress bar on standard error when it
    is a terminal (or ``--progress``), after counting what there is to do.
    """
    retention = args.retention or timedelta(0)
    counted = registry.count_expired(retention=retention)
    if args.dry_run:
        data = {**counted.as_dict(), "dry_run": True}
        return Outcome(f"would purge {_purge_text(counted)}", data)
    options: dict[str, Any] = {
        "retention": retention,
        "batch_size": args.batch_size,
        "rest": args.rest,
    }
    if counted.total and _progress.wanted(args.progress, sys.stderr):
        with _progress.purge_bar(counted.total, sys.stderr) as progress:
            purged = registry.purge_expired_tokens(**options, progress=progress)
    else:
        purged = registry.purge_expired_tokens(**options)
    data = {"purged": purged.total, **purged.as_dict(), "dry_run": False}
    return Outcome(f"purged {_purge_text(purged)}", data)


def _purge_text(counts: PurgeCounts) -> str:
    """``counts`` in words, for people.

    >>> _purge_text(PurgeCounts(tokens=2, codes=1, grace_secrets=1))
    '4 rows: 2 access tokens, 0 refresh tokens, 1 code, 1 ended grace secret'
    """
    parts = [
        (counts.tokens, "access token"),
        (counts.refresh_tokens, "refresh token"),
        (counts.codes, "code"),
        (counts.grace_secrets, "ended grace secret"),
    ]
    kinds = ", ".join(f"{n} {name}{'' if n == 1 else 's'}" for n, name in parts)
    return f"{counts.total} row{'' if counts.total == 1 else 's'}: {kinds}"


class UsageError(Exception):
    """Arguments that parse but do not fit together; reported like argparse's (exit 2)."""


COMMANDS: dict[str, Handler] = {
    "apps register": apps_register,
    "apps list": apps_list,
    "apps show": apps_show,
    "apps edit": apps_edit,
    "apps enable": apps_enable,
    "apps disable": apps_disable,
    "apps remove": apps_remove,
    "apps regenerate-secret": apps_regenerate_secret,
    "apps rotate-secret": apps_rotate_secret,
    "apps reencrypt-secrets": apps_reencrypt_secrets,
    "accounts permit": accounts_permit,
    "accounts forbid": accounts_forbid,
    "accounts list": accounts_list,
    "installs add": installs_add,
    "installs list": installs_list,
    "installs accounts": installs_accounts,
    "installs suspend": installs_suspend,
    "installs resume": installs_resume,
    "installs remove": installs_remove,
    "tokens issue": tokens_issue,
    "tokens list": tokens_list,
    "tokens remove": tokens_remove,
    "tokens check": tokens_check,
    "tokens purge": tokens_purge,
}
