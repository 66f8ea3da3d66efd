"""Turning records into the CLI's tables and JSON documents."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from .._records import (
    AccessToken,
    App,
    AppListing,
    AppsPermission,
    Installation,
    InstallationListing,
    Page,
)
from .._validation import display_url

__all__ = [
    "app_detail",
    "app_installations_table",
    "apps_table",
    "installations_table",
    "jsonable",
    "page_json",
    "permissions_table",
    "tokens_table",
]

_DESCRIPTION_WIDTH = 40


def jsonable(value: Any) -> Any:
    """A JSON-ready copy of ``value``: attrs records become dicts, datetimes ISO 8601 strings.

    >>> from datetime import datetime, UTC
    >>> jsonable({"at": datetime(2015, 4, 20, tzinfo=UTC), "n": (1, 2)})
    {'at': '2015-04-20T00:00:00+00:00', 'n': [1, 2]}
    """
    if attrs.has(type(value)):
        return {
            f.name: jsonable(getattr(value, f.name)) for f in attrs.fields(type(value)) if f.repr
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def page_json(page: Page[Any]) -> dict[str, Any]:
    """A page as JSON: its items, where it stands in the list, and its cursors."""
    return {
        "items": [jsonable(item) for item in page.items],
        "total": page.total,
        "page": page.page,
        "per_page": page.per_page,
        "pages": page.pages,
        "after": page.after,
        "before": page.before,
    }


def _date(when: datetime) -> str:
    # The original VoipNow Apps pages show "Apr 20, 2015" and "Apr 20, 2015 10:56:40".
    return f"{when:%b} {when.day}, {when:%Y}"


def _datetime(when: datetime) -> str:
    """The date and time in UTC, saying so: a terminal's reader may be anywhere.

    >>> from datetime import timedelta, timezone
    >>> _datetime(datetime(2015, 4, 20, 12, 56, 40, tzinfo=timezone(timedelta(hours=3))))
    'Apr 20, 2015 09:56:40 UTC'
    """
    utc = when.astimezone(UTC)
    return f"{_date(utc)} {utc:%H:%M:%S} UTC"


def _shorten(text: str | None, width: int = _DESCRIPTION_WIDTH) -> str:
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    return [line(headers).rstrip(), *(line(row).rstrip() for row in rows)]


def _footer(page: Page[Any], noun: str) -> str:
    return (
        f"{page.total} {noun}    page {page.page} of {page.pages}    "
        f"Number of entries per page: {page.per_page}"
    )


def _status(enabled: bool) -> str:
    return "on" if enabled else "off"


def apps_table(page: Page[AppListing]) -> str:
    """The "App Registration" table: S, App, Key, Description, Instances, Configured."""
    rows = [
        [
            _status(row.app.enabled),
            row.app.name,
            row.app.key,
            _shorten(row.app.description),
            str(row.instances),
            _date(row.app.created_at),
        ]
        for row in page.items
    ]
    headers = ["S", "App", "Key", "Description", "Instances", "Configured"]
    return "\n".join([*_table(headers, rows), _footer(page, "App(s)")])


def installations_table(page: Page[InstallationListing]) -> str:
    """The account's apps: S, App, Key, Description, Access Tokens, Configured, By.

    The account's own app listed for its client-credentials tokens, not installed, shows
    "own" for its status and nothing under Configured and By.
    """
    rows = []
    for row in page.items:
        installation = row.installation
        status = "on"
        if not row.app.enabled:
            status = "off"
        elif installation is None:
            status = "own"
        elif installation.suspended:
            status = "susp"
        rows.append(
            [
                status,
                row.app.name,
                row.app.key,
                _shorten(row.app.description),
                f"{row.access_tokens} token(s)",
                "" if installation is None else _datetime(installation.installed_at),
                "" if installation is None else installation.installed_by,
            ]
        )
    headers = ["S", "App", "Key", "Description", "Access Tokens", "Configured", "By"]
    return "\n".join([*_table(headers, rows), _footer(page, "App(s)")])


def app_installations_table(page: Page[Installation]) -> str:
    """The accounts an app is installed on: S, Account, Configured, By."""
    rows = [
        [
            "susp" if row.suspended else "on",
            row.account,
            _datetime(row.installed_at),
            row.installed_by,
        ]
        for row in page.items
    ]
    headers = ["S", "Account", "Configured", "By"]
    return "\n".join([*_table(headers, rows), _footer(page, "account(s)")])


def permissions_table(page: Page[AppsPermission]) -> str:
    """The accounts permitted to use apps: Account, Permitted, By."""
    rows = [[row.account, _datetime(row.granted_at), row.granted_by] for row in page.items]
    return "\n".join([*_table(["Account", "Permitted", "By"], rows), _footer(page, "account(s)")])


def tokens_table(page: Page[AccessToken], *, accounts: bool = False) -> str:
    """The "Active Access Tokens" window: Token ID, Expires, Last used, User Agent, Approved by.

    "Last used" is the token's last allowed check, to the minute (see `appregistry.LastUse`),
    or "never". "Approved by" is the user who approved the token for its account; empty for
    client credentials and for tokens issued before it was recorded.

    With ``accounts``, each token's account too, first: the tokens of every account.
    """
    rows = [
        [
            *([token.account] if accounts else []),
            token.token_id,
            _datetime(token.expires_at),
            _datetime(token.last_used_at) if token.last_used_at else "never",
            token.user_agent or "",
            token.approved_by or "",
        ]
        for token in page.items
    ]
    headers = [
        *(["Account"] if accounts else []),
        "Token ID",
        "Expires",
        "Last used",
        "User Agent",
        "Approved by",
    ]
    return "\n".join([*_table(headers, rows), _footer(page, "token(s)")])


def app_detail(app: App) -> str:
    """Every field of an app, URLs shown in Unicode."""
    fields = [
        ("App ID/key", app.key),
        ("Name", app.name),
        ("Description", app.description or ""),
        ("Homepage", display_url(app.homepage)),
        ("Image URL", display_url(app.image_url) if app.image_url else ""),
        ("Admin email", app.admin_email),
        ("Admin phone", app.admin_phone or ""),
        ("Redirect URL", display_url(app.redirect_url)),
        ("Trusted", "yes" if app.trusted else "no"),
        ("Status", "enabled" if app.enabled else "disabled"),
        ("Owner", app.owner),
        ("Configured", _datetime(app.created_at)),
    ]
    width = max(len(label) for label, _ in fields)
    return "\n".join(f"{label.ljust(width)}  {value}".rstrip() for label, value in fields)
