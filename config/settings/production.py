"""Production: every secret is required, HTTPS assumed behind nginx."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int

from .base import *  # noqa: F403
from .base import MIDDLEWARE, SECRET_KEY

MIN_SECRET_KEY_LENGTH = 50
# Words of the placeholders in .env.example, compose and local settings, and of the usual ones.
_PLACEHOLDER_WORDS = ("change-me", "changeme", "insecure", "placeholder", "example", "secret-key")

if not SECRET_KEY:
    raise ImproperlyConfigured("Set DJANGO_SECRET_KEY: production refuses to start without it.")
if (
    len(SECRET_KEY) < MIN_SECRET_KEY_LENGTH
    or len(set(SECRET_KEY)) < 5
    or any(word in SECRET_KEY.lower() for word in _PLACEHOLDER_WORDS)
):
    raise ImproperlyConfigured(
        f"DJANGO_SECRET_KEY is a placeholder or too short: production needs at least "
        f"{MIN_SECRET_KEY_LENGTH} random characters, e.g. "
        '`python -c "import secrets; print(secrets.token_urlsafe(50))"`.'
    )

DEBUG = False
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
USE_X_FORWARDED_HOST = True
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True

# --- Static files served by the app itself (WhiteNoise), so the page is styled and scripted
# wherever it runs, gunicorn alone included; nginx may still serve /static/ in front (compose).
# Hashed names (collectstatic at image build), gzip copies, and a far-future
# Cache-Control on hashed files (WhiteNoise marks them immutable).
MIDDLEWARE = [*MIDDLEWARE]
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
    "whitenoise.middleware.WhiteNoiseMiddleware",
)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
