"""Log records that quote request values, made safe to read: no forged lines, no hidden text."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Final

__all__ = ["EscapeControlCharacters", "escape_control_characters", "install_log_escaping"]

# Characters that start a new line, move the cursor, drive a terminal or reorder text when a
# log line is read: C0 and C1 controls, DEL, the Unicode line and paragraph separators, and
# the bidirectional overrides and isolates (which make a line read other than it is).
_BIDI: Final = frozenset(range(0x202A, 0x202F)) | frozenset(range(0x2066, 0x206A))
_SHORT: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if code < 0x20 or 0x7F <= code < 0xA0 or code in {0x2028, 0x2029} or code in _BIDI:
        short = _SHORT.get(ch)
        if short is not None:
            return short
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return ch


def escape_control_characters(text: str) -> str:
    r"""``text`` with each control character written as an escape, so it stays on one line.

    >>> escape_control_characters("https://app.example/cb\nINFO forged line")
    'https://app.example/cb\\nINFO forged line'
    >>> escape_control_characters("bell\x07 and \u202eevil")
    'bell\\x07 and \\u202eevil'
    """
    if text.isprintable():
        return text
    return "".join(_escape_char(ch) for ch in text)


class _Escaped:
    """A log argument whose text (``%s``) and representation (``%r``) are escaped."""

    __slots__ = ("_value",)

    def __init__(self, value: object) -> None:
        self._value = value

    def __str__(self) -> str:
        return escape_control_characters(str(self._value))

    def __repr__(self) -> str:
        return escape_control_characters(repr(self._value))


def _safe(value: object) -> object:
    # Numbers keep their type, for %d and %f; everything else may carry request text.
    if value is None or isinstance(value, int | float):
        return value
    return _Escaped(value)


class EscapeControlCharacters(logging.Filter):
    r"""A logging filter that escapes control characters in every value a record quotes.

    A request value quoted in a log line (a ``redirect_uri``, a path, a user agent) could
    otherwise hold a newline and forge a line of its own, or terminal escapes. The message's
    arguments are wrapped so that they render escaped; a message without arguments is
    escaped whole. It never drops a record.

    `install_log_escaping` puts it on the ``appregistry`` loggers and oauthlib's. Put it on
    your handlers too (``handler.addFilter(EscapeControlCharacters())``) to cover every
    logger that writes through them.

    >>> import logging
    >>> record = logging.LogRecord("x", logging.INFO, __file__, 1, "got %s", ("a\nb",), None)
    >>> EscapeControlCharacters().filter(record), record.getMessage()
    (True, 'got a\\nb')
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Escape ``record``'s arguments (or its message, when it has none), in place."""
        # Filtering twice is harmless: escaped text has no control character left.
        args = record.args
        if isinstance(args, Mapping):
            record.args = {key: _safe(value) for key, value in args.items()}
        elif args:
            record.args = tuple(_safe(value) for value in args)
        elif isinstance(record.msg, str):
            record.msg = escape_control_characters(record.msg)
        else:
            record.msg = _Escaped(record.msg)
        return True


_FILTER: Final = EscapeControlCharacters()
_INSTALL_LOCK: Final = threading.Lock()
# The loggers whose records quote request values; oauthlib's are found by their prefix.
_OWN_LOGGERS: Final = ("appregistry", "appregistry.oauth2")
_PREFIXES: Final = ("oauthlib",)


def install_log_escaping() -> None:
    """Put `EscapeControlCharacters` on the appregistry loggers and every oauthlib logger.

    A logger's filters see only the records logged on that logger itself, not its
    children's, so each logger gets it. Idempotent; the endpoints call it when made.
    """
    with _INSTALL_LOCK:
        names = [*_OWN_LOGGERS] + [
            name
            for name in list(logging.Logger.manager.loggerDict)
            if name.split(".")[0] in _PREFIXES
        ]
        for name in names:
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
