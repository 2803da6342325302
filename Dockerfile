# syntax=docker/dockerfile:1
# One image for web (gunicorn) and worker (manage.py run_sqs_worker); a second, small stage is
# nginx with the collected static files baked in. docker-compose.yml builds both targets.

FROM python:3.13-slim-bookworm AS app
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app
COPY requirements.txt ./
RUN pip install -r requirements.txt
COPY . .
# Bytecode now: at run time the code is read-only to the process.
RUN python -m compileall -q config questions manage.py
# Static files: hashed and compressed (WhiteNoise serves them from this image; nginx has a copy).
RUN DJANGO_SETTINGS_MODULE=config.settings.production \
    DJANGO_SECRET_KEY=collectstatic-only-not-a-runtime-key \
    OTEL_SDK_DISABLED=true \
    python manage.py collectstatic --noinput
# The code stays root-owned and read-only to the process.
USER app
ENV DJANGO_SETTINGS_MODULE=config.settings.production
EXPOSE 8000 9100
# Exec form: gunicorn is PID 1 and gets SIGTERM itself.
CMD ["gunicorn", "config.wsgi", "-c", "config/gunicorn.conf.py"]

FROM nginx:1.27-alpine AS nginx
COPY nginx/nginx.conf /etc/nginx/nginx.conf
COPY --from=app /app/staticfiles /srv/static
