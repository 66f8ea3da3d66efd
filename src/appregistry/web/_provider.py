"""The provider administrator's pages: App Registration, Add/Edit App, Accounts."""

from __future__ import annotations

from starlette.responses import Response

from .._records import App, RegisteredApp
from ..errors import LimitExceeded, SecretNotRetrievable, ValidationError
from ._forms import APP_FORM_FIELDS, AppForm
from ._site import Ctx, Refusal, Site, problems_by_field

__all__ = [
    "account_forbid",
    "account_permit",
    "accounts",
    "app_disable",
    "app_edit",
    "app_enable",
    "app_new",
    "app_regenerate",
    "app_reveal",
    "apps",
    "apps_remove",
]


def _keep(ctx: Ctx) -> dict[str, object]:
    # The list's search and paging, carried through a change so the user lands where they were.
    search, page, per_page = ctx.listing()
    return {"search": search, "page": page if page > 1 else None, "per_page": per_page}


# -- App Registration ----------------------------------------------------------------------


def apps(site: Site, ctx: Ctx) -> Response:
    """Every registered app: S, App, Description, Instances, Configured (seed 003)."""
    listing, problems = site.list_page(ctx, site.registry.list_apps)
    return site.render(
        ctx,
        "appregistry/apps.html",
        {"listing": listing, "search": ctx.listing()[0] or "", "problems": problems},
        status=400 if problems else 200,
    )


def apps_remove(site: Site, ctx: Ctx) -> Response:
    """Remove Selected: every selected app, with its installations and tokens, or none."""
    keys = ctx.fields("key")
    if not keys:
        return site.redirect(ctx, "apps", "Select the apps to remove first.", query=_keep(ctx))
    try:
        removed = site.registry.remove_apps(keys)
    except ValidationError as exc:
        raise Refusal(400, "Bad request", exc.problems[0].message) from exc
    return site.redirect(ctx, "apps", f"Removed {removed} app(s).", query=_keep(ctx))


def app_enable(site: Site, ctx: Ctx) -> Response:
    """S: enable the app; its unexpired tokens work again (R11)."""
    app = site.registry.enable_app(ctx.request.path_params["key"])
    return site.redirect(ctx, "apps", f"{app.name} is enabled.", query=_keep(ctx))


def app_disable(site: Site, ctx: Ctx) -> Response:
    """S: disable the app; it can neither obtain nor use tokens until enabled (R11)."""
    app = site.registry.disable_app(ctx.request.path_params["key"])
    return site.redirect(ctx, "apps", f"{app.name} is disabled.", query=_keep(ctx))


# -- Add App / Edit App ----------------------------------------------------------------------


def _form_page(
    site: Site,
    ctx: Ctx,
    form: AppForm,
    *,
    app: App | None = None,
    secret: str | None = None,
    problems: dict[str, list[str]] | None = None,
    status: int = 200,
    message: str | None = None,
) -> Response:
    return site.render(
        ctx,
        "appregistry/app_form.html",
        {
            "app": app,
            "form": form,
            "fields": APP_FORM_FIELDS,
            "secret": secret,
            "problems": problems or {},
            "can_reveal": site.reveal_secrets,
        },
        status=status,
        message=message,
    )


def app_new(site: Site, ctx: Ctx) -> Response:
    """Add App: the form, and on OK the new app with its key and secret, shown this once."""
    if ctx.form is None:
        return _form_page(site, ctx, AppForm.empty())
    form = AppForm.posted(ctx.field)
    try:
        registered = site.registry.register_app(ctx.user.account, **form.arguments())
    except ValidationError as exc:
        return _form_page(site, ctx, form, problems=problems_by_field(exc.problems), status=400)
    except LimitExceeded as exc:
        return _form_page(site, ctx, form, problems={"": [str(exc)]}, status=400)
    return _shown_once(
        site,
        ctx,
        registered,
        f"{registered.app.name} is registered. Copy its secret now: it is not shown again.",
    )


def _shown_once(site: Site, ctx: Ctx, registered: RegisteredApp, message: str) -> Response:
    # The secret goes in this answer alone (no-store), never through the session cookie.
    return _form_page(
        site,
        ctx,
        AppForm.of(registered.app),
        app=registered.app,
        secret=registered.secret,
        message=message,
    )


def app_edit(site: Site, ctx: Ctx) -> Response:
    """Edit App: the app's fields; on OK they are saved and the list shows again."""
    key = ctx.request.path_params["key"]
    app = site.registry.get_app(key)
    if ctx.form is None:
        return _form_page(site, ctx, AppForm.of(app), app=app)
    form = AppForm.posted(ctx.field)
    try:
        app = site.registry.update_app(key, **form.arguments())
    except ValidationError as exc:
        problems = problems_by_field(exc.problems)
        return _form_page(site, ctx, form, app=app, problems=problems, status=400)
    return site.redirect(ctx, "apps", f"Saved {app.name}.")


def app_regenerate(site: Site, ctx: Ctx) -> Response:
    """Regenerate: a confirmation page (GET), then a new secret shown once (POST) (R8)."""
    key = ctx.request.path_params["key"]
    if ctx.form is None:
        app = site.registry.get_app(key)
        return site.render(ctx, "appregistry/regenerate.html", {"app": app})
    registered = site.registry.regenerate_secret(key)
    return _shown_once(
        site,
        ctx,
        registered,
        f"{registered.app.name} has a new secret; the old one and every token of the app "
        "no longer work. Copy the secret now: it is not shown again.",
    )


def app_reveal(site: Site, ctx: Ctx) -> Response:
    """Reveal: the current secret, where the registry keeps secrets encrypted (R7)."""
    key = ctx.request.path_params["key"]
    app = site.registry.get_app(key)
    try:
        secret = site.registry.reveal_secret(key)
    except SecretNotRetrievable:
        return _form_page(
            site,
            ctx,
            AppForm.of(app),
            app=app,
            message="This secret is kept only as a digest: it cannot be shown. "
            "Regenerate it to get a new one.",
        )
    return _form_page(site, ctx, AppForm.of(app), app=app, secret=secret, message=None)


# -- Accounts --------------------------------------------------------------------------------


def accounts(site: Site, ctx: Ctx, *, problems: dict[str, list[str]] | None = None) -> Response:
    """The accounts permitted to use apps, who permitted each and when; permit and forbid."""
    listing, search_problems = site.list_page(ctx, site.registry.list_permissions)
    return site.render(
        ctx,
        "appregistry/accounts.html",
        {
            "listing": listing,
            "search": ctx.listing()[0] or "",
            "problems": {**search_problems, **(problems or {})},
            "posted": ctx.field("account") if ctx.form is not None else "",
        },
        status=400 if problems else 200,
    )


def account_permit(site: Site, ctx: Ctx) -> Response:
    """Permit an account to use apps; its tokens work again (R14)."""
    account = ctx.field("account")
    try:
        site.registry.permit_account(account, by=ctx.user.name)
    except ValidationError as exc:
        problems = {"account": [p.message for p in exc.problems]}
        return accounts(site, ctx, problems=problems)
    return site.redirect(ctx, "accounts", f"{account} may use apps.", query=_keep(ctx))


def account_forbid(site: Site, ctx: Ctx) -> Response:
    """Withdraw an account's apps permission; its tokens stop acting, but are kept (R14)."""
    account = ctx.field("account")
    try:
        site.registry.forbid_account(account)
    except ValidationError as exc:
        raise Refusal(400, "Bad request", "That is not an account id.") from exc
    return site.redirect(ctx, "accounts", f"{account} may no longer use apps.", query=_keep(ctx))
