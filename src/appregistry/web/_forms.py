"""The Add App / Edit App form: its fields in the seed's order, read from a post or an app."""

from __future__ import annotations

from typing import Any, Final

import attrs

from .._records import App
from .._validation import display_url

__all__ = ["APP_FORM_FIELDS", "AppForm", "FormField", "beside_field"]


@attrs.frozen
class FormField:
    """One input of the app form, as the template lays it out."""

    name: str
    label: str
    kind: str = "text"
    required: bool = False
    hint: str = ""
    #: The group (fieldset) the seed puts it in.
    group: str = "App Info"
    autocomplete: str = "off"


#: The seed's Add App form, in its order (App ID/key and secret are shown apart).
APP_FORM_FIELDS: Final = (
    FormField("name", "Name", required=True, hint="A descriptive name, e.g. Google Apps."),
    FormField("description", "Description", kind="textarea"),
    FormField(
        "homepage",
        "Homepage",
        kind="url",
        required=True,
        hint="Shown to users authorizing the app; the host may be an internationalized name.",
    ),
    FormField("image_url", "Image URL", kind="url"),
    FormField("admin_email", "Admin email", kind="email", required=True, group="Contact Info"),
    FormField(
        "admin_phone",
        "Admin phone",
        kind="tel",
        group="Contact Info",
        hint="International format, e.g. +1 650 253 0000.",
    ),
    FormField(
        "trusted",
        "App is trusted",
        kind="checkbox",
        group="User Agreement",
        hint="A trusted app gets tokens with its key and secret alone, with no user's approval.",
    ),
    FormField(
        "redirect_url",
        "Redirect URL",
        kind="url",
        required=True,
        group="User Agreement",
        hint="Where users return after authorizing the app: an https:// URL.",
    ),
)
_OPTIONAL: Final = frozenset({"description", "image_url", "admin_phone"})


def beside_field(message: str, field: str) -> str:
    """A problem's message as shown beside its field: without the field's name in front.

    The registry's messages name the argument (``admin_email is not a valid ...``) because
    they are read alone, in logs and exceptions; beside the field, under its label, the name
    only repeats it, and in its programmer's spelling. Several messages are joined with a
    space, so each ends with a full stop.

    >>> beside_field("admin_email is not a valid email address", "admin_email")
    'Is not a valid email address.'
    >>> beside_field("The owner may register at most 3 apps.", "owner")
    'The owner may register at most 3 apps.'
    """
    prefix = f"{field} "
    if field and message.startswith(prefix) and len(message) > len(prefix):
        message = message[len(prefix)].upper() + message[len(prefix) + 1 :]
    return message if message.endswith((".", "!", "?")) else f"{message}."


@attrs.frozen
class AppForm:
    """The form's values as text (a checkbox as ``"on"`` or ``""``), as the user typed them."""

    values: dict[str, str]

    @classmethod
    def empty(cls) -> AppForm:
        """A blank Add App form."""
        return cls({field.name: "" for field in APP_FORM_FIELDS})

    @classmethod
    def posted(cls, read: Any) -> AppForm:
        """The posted form; ``read(name)`` gives a field's text."""
        return cls({field.name: read(field.name) for field in APP_FORM_FIELDS})

    @classmethod
    def of(cls, app: App) -> AppForm:
        """An app's fields, URLs in Unicode as people read them (R2)."""
        return cls(
            {
                "name": app.name,
                "description": app.description or "",
                "homepage": display_url(app.homepage),
                "image_url": display_url(app.image_url) if app.image_url else "",
                "admin_email": app.admin_email,
                "admin_phone": app.admin_phone or "",
                "trusted": "on" if app.trusted else "",
                "redirect_url": display_url(app.redirect_url),
            }
        )

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of `Registry.register_app` and `Registry.update_app`.

        An optional field left empty is ``None`` (cleared); a required one stays ``""`` so that
        the registry reports it as required, beside the others' problems.
        """
        arguments: dict[str, Any] = {}
        for field in APP_FORM_FIELDS:
            text = self.values.get(field.name, "")
            if field.kind == "checkbox":
                arguments[field.name] = text != ""
            elif field.name in _OPTIONAL:
                arguments[field.name] = text.strip() or None
            else:
                arguments[field.name] = text.strip()
        return arguments
