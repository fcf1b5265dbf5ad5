# websurf worker image: a wheel built in one stage, installed into a slim runtime.
#
#   docker build -t websurf .
#   docker run --rm -e WEBSURF_DATABASE_URL=postgresql://... websurf migrate
#   docker run -d -e WEBSURF_DATABASE_URL=postgresql://... -p 9464:9464 websurf
#
# The image runs `websurf worker` by default (ENTRYPOINT + CMD), as a non-root user,
# without the `embedded` extra: production points it at a real PostgreSQL.

ARG PYTHON_IMAGE=python:3.11-slim

# -- build: the wheel (SQL migrations, named queries and the Drizzle mirror inside) ---
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip build
COPY pyproject.toml README.md ./
COPY sql ./sql
COPY worker ./worker
COPY cli ./cli
RUN python -m build --wheel --outdir /dist .

# -- runtime ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/websurf/bin:$PATH \
    WEBSURF_LOG_FORMAT=json \
    WEBSURF_METRICS_PORT=9464
RUN groupadd --system --gid 10001 websurf \
    && useradd --system --uid 10001 --gid websurf --no-create-home --shell /usr/sbin/nologin websurf
COPY --from=build /dist/*.whl /tmp/
RUN python -m venv /opt/websurf \
    && /opt/websurf/bin/pip install --no-cache-dir /tmp/*.whl \
    && rm /tmp/*.whl
USER websurf:websurf
WORKDIR /tmp
EXPOSE 9464
# The supervisor is PID 1: it reaps orphans, forwards SIGTERM to its worker processes
# and exits once they have finished or handed back their tasks. Give `docker stop` a
# --time (Kubernetes: terminationGracePeriodSeconds) above --shutdown-timeout (30 s).
STOPSIGNAL SIGTERM
# Liveness of the supervisor (`/healthz`); orchestrators should probe `/readyz` for
# readiness (a worker process reached the database with the schema at head).
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('WEBSURF_METRICS_PORT', '9464'), timeout=2)"]
ENTRYPOINT ["websurf"]
CMD ["worker"]
