# The end of the Django project's settings.py (tools.py appends it to what startproject wrote).

# recipe: Django
# Django takes no URI: the parts reveal gives (host, port, user, password, database,
# sslrootcert), here as env vars. ENGINE postgresql uses psycopg 3 when it is installed.
import os  # noqa: E402


def dl_database(prefix):
    return {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ[f"{prefix}_HOST"],
        "PORT": os.environ[f"{prefix}_PORT"],
        "NAME": os.environ[f"{prefix}_NAME"],
        "USER": os.environ[f"{prefix}_USER"],
        "PASSWORD": os.environ[f"{prefix}_PASSWORD"],
        "OPTIONS": {"sslmode": "verify-full", "sslrootcert": os.environ[f"{prefix}_SSLROOTCERT"]},
        # The pooled URI is PgBouncer in transaction mode: a server-side cursor (what
        # QuerySet.iterator() opens) does not outlive its transaction there.
        "DISABLE_SERVER_SIDE_CURSORS": True,
    }


DATABASES = {
    # The override login: migrate with its direct URI's parts, run the app with the pooled.
    "default": dl_database("DB"),
    # The read login, for dl_resolved.people/companies: .using("read").
    "read": dl_database("DB_READ"),
}
# end recipe
