"""django-oauth-toolkit's side of the HTTP rows: a Django project set up as DOT's docs say.

A token endpoint (``/o/token/``, from ``oauth2_provider.urls``) and one view protected by
DOT's ``@protected_resource()``, on the database `settings` reads from the environment
(``DOT_BENCH_DATABASE``: ``sqlite:<path>`` or ``postgresql:<schema>``, with the PostgreSQL
URL in ``DOT_BENCH_POSTGRES``). `benchmarks._http` migrates it, creates the applications and
the token with ``python -m benchmarks.dot_project.prepare``, and serves ``wsgi.application``
under gunicorn.
"""
