"""Who is signed in: the host says so through ``current_user``; each role has its pages."""

from __future__ import annotations

import enum
from collections.abc import Callable

import attrs
from starlette.requests import Request

__all__ = ["CurrentUser", "Role", "WebUser"]


class Role(enum.StrEnum):
    """What a signed-in user manages."""

    #: The provider's administrator: registers apps (App Registration, Add/Edit App) and
    #: permits accounts to use apps (Accounts).
    PROVIDER = "provider"
    #: A user of one account: the apps installed there (App Management), their tokens, and
    #: installing the apps the account may use.
    ACCOUNT = "account"


@attrs.frozen
class WebUser:
    """The user signed in to the host, as the pages see them.

    Args:
        name: Who they are, as the host names users; recorded as who permitted an account or
            installed an app.
        role: `Role.PROVIDER` or `Role.ACCOUNT`.
        account: The account they act for: an account user's own account; for the provider's
            administrator, the account that owns the apps they register.

    >>> WebUser("alice", Role.ACCOUNT, "acme")
    WebUser(name='alice', role=<Role.ACCOUNT: 'account'>, account='acme')
    """

    name: str
    role: Role
    account: str


#: Says who is signed in to the host in this request, or ``None``: called for every page, in
#: a worker thread, so it may read the host's session store.
CurrentUser = Callable[[Request], WebUser | None]
