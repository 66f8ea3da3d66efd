"""Settings of the DOT project: DOT's defaults, with the database from the environment.

Only what DOT's tutorial sets, plus what a production deployment would: ``DEBUG`` off,
persistent database connections (``CONN_MAX_AGE=None``: Django's default, 0, would connect
anew on every request, which no one benchmarks), and on SQLite the WAL journal and
``BEGIN IMMEDIATE`` that Django's documentation recommends for concurrent writers (the
library's SQLite storage uses WAL too).
"""

from __future__ import annotations

import os
from typing import Any

from psycopg.conninfo import conninfo_to_dict

SECRET_KEY = "benchmark only, never deployed"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "benchmarks.dot_project.urls"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "oauth2_provider",
]
MIDDLEWARE: list[str] = []
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _database() -> dict[str, Any]:
    kind, _, where = os.environ.get("DOT_BENCH_DATABASE", "sqlite:dot.sqlite3").partition(":")
    if kind == "sqlite":
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": where,
            "CONN_MAX_AGE": None,
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
        }
    params = conninfo_to_dict(os.environ["DOT_BENCH_POSTGRES"])
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.get("dbname", "postgres"),
        "USER": params.get("user", "postgres"),
        "PASSWORD": params.get("password", ""),
        "HOST": params.get("host", "127.0.0.1"),
        "PORT": params.get("port", "5432"),
        "CONN_MAX_AGE": None,
        # A schema of its own, dropped at the end (the library's side has another).
        "OPTIONS": {"options": f"-c search_path={where}"},
    }


DATABASES = {"default": _database()}
