"""The management pages of the seeds, as an ASGI app: ``pip install 'appregistry[web]'``.

- `make_app`: a Starlette application with the provider's pages (App Registration,
  Add/Edit App, Accounts) and an account user's (App Management, an app's access tokens,
  installing apps), to mount under any path.
- `WebUser` and `Role`: who the host says is signed in, through ``current_user``.
- `dev_session_user`: the development sign-in's user (``unsafe_dev_sign_in=True``).

``import appregistry`` never imports this package, nor Starlette.

>>> from appregistry import Registry
>>> from appregistry.storage.memory import MemoryStorage
>>> from appregistry.web import Role, WebUser, make_app
>>> app = make_app(
...     Registry(storage=MemoryStorage()),
...     current_user=lambda request: WebUser("alice", Role.ACCOUNT, "acme"),
... )
"""

from ._app import DEFAULT_MAX_BODY_SIZE, make_app
from ._dev import dev_session_user
from ._security import CONTENT_SECURITY_POLICY
from ._users import CurrentUser, Role, WebUser

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "DEFAULT_MAX_BODY_SIZE",
    "CurrentUser",
    "Role",
    "WebUser",
    "dev_session_user",
    "make_app",
]
