# syntax=docker/dockerfile:1
# One image for both services and the QBO emulator; the first argument picks the module:
#   docker run IMAGE services.api  --host 0.0.0.0 --port 8080   (the default)
#   docker run IMAGE services.sync --host 0.0.0.0 --port 8000
#   docker run IMAGE qbo_emulator  --host 0.0.0.0 --port 8790
# Configured only by environment variables (services/common/settings.py); ENVIRONMENT is
# `production` unless you say otherwise. Runs as uid 10001
# with a read-only root filesystem: only /tmp needs to be writable.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- builder: the project's dependencies in a virtualenv, the code compiled -----------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies first, from pyproject.toml alone, so a code change reuses this layer.
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install --requirement /tmp/requirements.txt

# The code runs from /app (not site-packages): the JSON Schemas are the `schemas` package next
# to the others. Its bytecode is compiled here, checked by hash rather
# than by timestamp, so the read-only runtime never needs to write a .pyc (pip already compiled
# the dependencies).
WORKDIR /app
COPY services/ ./services/
COPY qbo_emulator/ ./qbo_emulator/
COPY schemas/ ./schemas/
RUN python -m compileall -q --invalidation-mode unchecked-hash /app

# --- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="qbo-sync" \
      org.opencontainers.image.description="Keeps an app's customers and invoices in step with their QuickBooks Online books." \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app

# Never local mode in the image: outside `local` the services refuse to start until their own
# keys, secrets and tokens are configured, instead of using the published development ones.
ENV PATH=/opt/venv/bin:$PATH \
    ENVIRONMENT=production \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp

WORKDIR /app
USER 10001:10001

EXPOSE 8000 8080
STOPSIGNAL SIGTERM

ENTRYPOINT ["python", "-m"]
CMD ["services.api", "--host", "0.0.0.0", "--port", "8080"]
