"""An account user's pages: App Management, the tokens of an app, installing apps."""

from __future__ import annotations

import functools

import attrs
from starlette.responses import Response

from .._records import App, Installation, InstallationListing, Page
from ..errors import ValidationError
from ._site import Ctx, Refusal, Site

__all__ = [
    "OnAccount",
    "install",
    "install_app",
    "installation_resume",
    "installation_suspend",
    "installed",
    "installed_remove",
    "on_account",
    "tokens",
    "tokens_remove",
]


def permitted(site: Site, ctx: Ctx) -> None:
    """Refuse (403) a user whose account does not hold the apps permission (R14)."""
    if site.registry.get_permission(ctx.user.account) is None:
        raise Refusal(
            403,
            "Apps are not enabled for this account",
            f"The account {ctx.user.account} may not use apps. Ask your provider to permit it.",
        )


@attrs.frozen
class OnAccount:
    """An app as the signed-in account has it: installed there, or its own app, or both."""

    app: App
    installation: Installation | None


def on_account(site: Site, ctx: Ctx, key: str) -> OnAccount:
    """The app ``key`` on the signed-in user's account: the one place ownership is decided.

    The account holds the apps permission, and the app is installed on the account or is the
    account's own (a trusted app's client-credentials tokens act for its owner, R19).

    Raises:
        Refusal: 403 for an app that is not on the account or an account without the apps
            permission.
        AppNotFound: No app has ``key`` (404).
    """
    permitted(site, ctx)
    app = site.registry.get_app(key)
    installation = _installation(site, app, ctx.user.account)
    if installation is None and app.owner != ctx.user.account:
        raise Refusal(403, "Not on your account", f"{app.name} is not installed on this account.")
    return OnAccount(app, installation)


def _installation(site: Site, app: App, account: str) -> Installation | None:
    # The Registry has no look-up of one installation: the account's list, searched by the
    # app's name, holds it if it exists (one storage call, unless 100 other apps match).
    page = 1
    while True:
        listing = site.registry.list_installations(
            account, search=app.name, page=page, per_page=100
        )
        for item in listing.items:
            if item.app.key == app.key:
                return item.installation
        if page >= listing.pages:
            return None
        page += 1


# -- App Management ----------------------------------------------------------------------------


def installed(site: Site, ctx: Ctx) -> Response:
    """App Management (seed 000): S, App, Description, Access Tokens, Configured."""
    permitted(site, ctx)
    listing: Page[InstallationListing]
    listing, problems = site.list_page(
        ctx, functools.partial(site.registry.list_installations, ctx.user.account)
    )
    return site.render(
        ctx,
        "appregistry/installed.html",
        {"listing": listing, "search": ctx.listing()[0] or "", "problems": problems},
        status=400 if problems else 200,
    )


def _keep(ctx: Ctx) -> dict[str, object]:
    search, page, per_page = ctx.listing()
    return {"search": search, "page": page if page > 1 else None, "per_page": per_page}


def installation_suspend(site: Site, ctx: Ctx) -> Response:
    """S: suspend the app on this account; its tokens here stop acting (R12)."""
    found = on_account(site, ctx, ctx.request.path_params["key"])
    site.registry.suspend_installation(found.app.key, ctx.user.account)
    return site.redirect(ctx, "installed", f"{found.app.name} is suspended.", query=_keep(ctx))


def installation_resume(site: Site, ctx: Ctx) -> Response:
    """S: resume the app on this account; unexpired tokens work again (R12)."""
    found = on_account(site, ctx, ctx.request.path_params["key"])
    site.registry.resume_installation(found.app.key, ctx.user.account)
    return site.redirect(ctx, "installed", f"{found.app.name} is resumed.", query=_keep(ctx))


def installed_remove(site: Site, ctx: Ctx) -> Response:
    """Remove Selected: uninstall every selected app from this account, or none (R15)."""
    permitted(site, ctx)
    keys = ctx.fields("key")
    if not keys:
        return site.redirect(ctx, "installed", "Select the apps to remove first.", query=_keep(ctx))
    # Scoped to the signed-in account: another account's installation cannot be named.
    try:
        site.registry.uninstall_apps(keys, ctx.user.account)
    except ValidationError as exc:
        raise Refusal(400, "Bad request", exc.problems[0].message) from exc
    return site.redirect(ctx, "installed", f"Removed {len(keys)} app(s).", query=_keep(ctx))


# -- Manage Access Tokens for App X --------------------------------------------------------------


def tokens(site: Site, ctx: Ctx) -> Response:
    """The live tokens of an app on this account: Expires, Last used, User Agent; search; remove.

    ``?order=last_used`` lists the most recently used first (a link in the column's header);
    anything else, the soonest expiry first.
    """
    found = on_account(site, ctx, ctx.request.path_params["key"])
    order = "last_used" if ctx.request.query_params.get("order") == "last_used" else "expires"
    listing, problems = site.list_page(
        ctx,
        functools.partial(site.registry.list_tokens, found.app.key, ctx.user.account, order=order),
    )
    return site.render(
        ctx,
        "appregistry/tokens.html",
        {
            "app": found.app,
            "listing": listing,
            "search": ctx.listing()[0] or "",
            "problems": problems,
            "order": order,
        },
        status=400 if problems else 200,
    )


def tokens_remove(site: Site, ctx: Ctx) -> Response:
    """Remove Selected: the selected tokens, or with the header box every token of the app."""
    found = on_account(site, ctx, ctx.request.path_params["key"])
    key, account = found.app.key, ctx.user.account
    back = "installed" if ctx.field("return_to") == "installed" else "tokens"
    params = {} if back == "installed" else {"key": key}
    keep = {} if back == "installed" else _keep(ctx)
    if ctx.field("all"):
        removed = site.registry.remove_all_tokens(key, account)
    else:
        ids = ctx.fields("token")
        if not ids:
            return site.redirect(
                ctx, back, "Select the tokens to remove first.", query=keep, **params
            )
        try:
            removed = site.registry.remove_tokens(ids, key=key, account=account)
        except ValidationError as exc:
            raise Refusal(400, "Bad request", exc.problems[0].message) from exc
    return site.redirect(ctx, back, f"Removed {removed} token(s).", query=keep, **params)


# -- installing an app ---------------------------------------------------------------------------


def install(site: Site, ctx: Ctx) -> Response:
    """The apps this account may install: every registered app; the enabled ones install."""
    permitted(site, ctx)
    listing, problems = site.list_page(ctx, site.registry.list_apps)
    return site.render(
        ctx,
        "appregistry/install.html",
        {"listing": listing, "search": ctx.listing()[0] or "", "problems": problems},
        status=400 if problems else 200,
    )


def install_app(site: Site, ctx: Ctx) -> Response:
    """Install the app on this account, recording the signed-in user and the time (R15)."""
    permitted(site, ctx)
    installation = site.registry.install_app(
        ctx.request.path_params["key"], ctx.user.account, by=ctx.user.name
    )
    app = site.registry.get_app(installation.app_key)
    return site.redirect(ctx, "installed", f"{app.name} is installed on {ctx.user.account}.")
