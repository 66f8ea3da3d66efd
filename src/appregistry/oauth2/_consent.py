"""The consent page: what the signed-in user sees, and the CSRF token that protects the answer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Final

import attrs

from .._records import App
from .._validation import display_url
from ._validator import SignedInUser

__all__ = [
    "CONSENT_FIELDS",
    "CONSENT_LIFETIME",
    "ConsentPage",
    "ConsentRequest",
    "CsrfSigner",
    "default_consent_page",
]

#: The authorization request's parameters the consent form carries to the answer.
CONSENT_FIELDS: Final = (
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
)
#: How long the user has to answer the consent page.
CONSENT_LIFETIME: Final = timedelta(minutes=10)
_CSRF_LABEL: Final = "appregistry-consent-v1"
_CLOCK_SKEW: Final = 60


@attrs.frozen
class ConsentRequest:
    """Everything a consent page shows and must send back.

    Attributes:
        app: The app asking for access.
        user: The signed-in user deciding, and the account the app would act for.
        action: The URL the form posts to.
        fields: Hidden form fields (the request's parameters and the CSRF token): the form
            must post every one of them back unchanged, with ``decision`` set to ``approve``
            or ``deny``.
        stylesheet_url: A stylesheet the host asked for, if any.
        blocked: Why the user cannot allow the app now (for instance, the account is not
            permitted to use apps), or ``None``. A page must then say so and offer no way to
            allow it: an approval would be refused anyway. Denying still works, and sends
            the user back to the app.
    """

    app: App
    user: SignedInUser
    action: str
    fields: tuple[tuple[str, str], ...]
    stylesheet_url: str | None = None
    blocked: str | None = None

    def hidden_inputs(self) -> str:
        """The hidden ``<input>`` elements of `fields`, escaped, for a host's own template."""
        return "\n".join(
            f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
            for name, value in self.fields
        )

    @property
    def redirect_host(self) -> str:
        """The host the user goes back to once they decide, as people read it.

        The request's ``redirect_uri``, or the app's redirect URL when the request left it out.
        """
        redirect = dict(self.fields).get("redirect_uri", self.app.redirect_url)
        return urllib.parse.urlsplit(display_url(redirect)).netloc


#: Renders a `ConsentRequest` as a complete HTML document.
ConsentPage = Callable[[ConsentRequest], str]


def default_consent_page(consent: ConsentRequest) -> str:
    """A plain HTML page with stable class names, for a stylesheet to restyle.

    Every value is escaped. The buttons are ``<button name="decision" value="approve">`` and
    ``value="deny"``. When the request is `ConsentRequest.blocked`, the page says why
    (``<p class="consent-blocked">``) and has only the deny button, labelled "Back to the app".
    """
    app = consent.app
    name = html.escape(app.name)
    stylesheet = (
        f'\n<link rel="stylesheet" href="{html.escape(consent.stylesheet_url)}">'
        if consent.stylesheet_url
        else ""
    )
    image = (
        f'\n<img class="app-image" src="{html.escape(app.image_url)}" alt="">'
        if app.image_url
        else ""
    )
    description = (
        f'\n<p class="app-description">{html.escape(app.description)}</p>'
        if app.description
        else ""
    )
    if consent.blocked is None:
        blocked = ""
        return_text = "Either way, you go back to"
        buttons = (
            '<button class="approve" type="submit" name="decision" value="approve">Allow</button>'
            '\n<button class="deny" type="submit" name="decision" value="deny">Deny</button>'
        )
    else:
        blocked = f'\n<p class="consent-blocked" role="alert">{html.escape(consent.blocked)}</p>'
        return_text = "You cannot allow it now. You go back to"
        buttons = (
            '<button class="deny" type="submit" name="decision" value="deny">'
            "Back to the app</button>"
        )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Authorize {name}</title>{stylesheet}
</head>
<body class="appregistry-consent">
<main>{image}
<h1>Authorize <span class="app-name">{name}</span>?</h1>
<p class="app-homepage"><a href="{html.escape(app.homepage)}" rel="noopener noreferrer">\
{html.escape(display_url(app.homepage))}</a></p>{description}
<p class="consent-question"><span class="app-name">{name}</span> asks to act for the account
<strong class="account">{html.escape(consent.user.account)}</strong>.
You are signed in as <strong class="user">{html.escape(consent.user.user)}</strong>.</p>{blocked}
<p class="consent-return">{return_text}
<strong class="redirect-host">{html.escape(consent.redirect_host)}</strong>.</p>
<form class="consent-form" method="post" action="{html.escape(consent.action)}">
{consent.hidden_inputs()}
{buttons}
</form>
</main>
</body>
</html>
"""


def message_page(title: str, message: str, *, stylesheet_url: str | None = None) -> str:
    """A plain HTML page saying one thing: an error, or "sign in first"."""
    stylesheet = (
        f'\n<link rel="stylesheet" href="{html.escape(stylesheet_url)}">' if stylesheet_url else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>{stylesheet}
</head>
<body class="appregistry-message">
<main>
<h1>{html.escape(title)}</h1>
<p>{html.escape(message)}</p>
</main>
</body>
</html>
"""


@attrs.frozen
class CsrfSigner:
    """Makes and checks the consent form's CSRF token.

    The token is an HMAC over the signed-in user, the authorization request's fields and the
    time it was made: only this server can make one, it works for that user and that request
    alone, and only for `CONSENT_LIFETIME`. A page of another site cannot read it, so it cannot
    post an approval in the user's name.

    >>> from datetime import datetime, UTC
    >>> signer = CsrfSigner(b"k" * 32)
    >>> user, now = SignedInUser("acme", "alice"), datetime(2015, 4, 20, tzinfo=UTC)
    >>> token = signer.sign(user, {"client_id": "K"}, now)
    >>> signer.verify(token, user, {"client_id": "K"}, now)
    True
    >>> signer.verify(token, SignedInUser("acme", "mallory"), {"client_id": "K"}, now)
    False
    """

    key: bytes = attrs.field(repr=False)

    def sign(self, user: SignedInUser, fields: Mapping[str, str], now: datetime) -> str:
        """A token for this user and these fields, made at ``now``."""
        issued = int(now.timestamp())
        return f"{issued}.{self._mac(issued, user, fields)}"

    def verify(
        self, token: object, user: SignedInUser, fields: Mapping[str, str], now: datetime
    ) -> bool:
        """Whether ``token`` was made by `sign` for this user and fields, and is still fresh."""
        # compare_digest takes ASCII text only: anything else is a forgery, not a crash.
        if not isinstance(token, str) or len(token) > 200 or not token.isascii():
            return False
        issued_text, _, mac = token.partition(".")
        if not issued_text.isascii() or not issued_text.isdigit():
            return False
        issued = int(issued_text)
        age = now.timestamp() - issued
        # A minute of slack for app servers whose clocks differ a little.
        if not -_CLOCK_SKEW <= age <= CONSENT_LIFETIME.total_seconds():
            return False
        return hmac.compare_digest(mac, self._mac(issued, user, fields))

    def _mac(self, issued: int, user: SignedInUser, fields: Mapping[str, str]) -> str:
        # JSON keeps the parts apart: no value can shift text from one part to the next.
        message = json.dumps(
            [_CSRF_LABEL, issued, user.account, user.user]
            + [fields.get(name, "") for name in CONSENT_FIELDS]
        ).encode()
        digest = hmac.new(self.key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
