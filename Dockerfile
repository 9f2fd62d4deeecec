# gpu-orchestrator: the daemon image (`gpu-orchestrator run`), built by Railway
# (see docs/deploy.md) or by hand:
#
#   docker build --platform linux/amd64 -t gpu-orchestrator .
#   docker run --rm -e DATABASE_URL=... -e RUNPOD_API_KEY=... -p 8080:8080 gpu-orchestrator
#
# linux/amd64 only: pgserver (the embedded Postgres, a dependency that production
# does not use) publishes no linux/arm64 wheel for Python 3.11.
#
# Two stages: the builder installs the package and its dependencies into a venv
# at /opt/venv; the runtime stage copies only that venv onto a fresh slim image.
# Every dependency ships a manylinux wheel, so neither stage needs a compiler.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, from pyproject's [project].dependencies, so this layer is
# reused until they change. Wheels only: a dependency that would need compiling
# fails the build here instead of pulling in build tools.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip install --only-binary=:all: -r requirements.txt

# Then the package itself: a regular (non-editable) install, which carries the
# SQL migrations as package data (gpu_orchestrator/store/migrations/*.sql).
COPY README.md ./
COPY gpu_orchestrator ./gpu_orchestrator
RUN pip install --no-deps . \
 && python -c "from gpu_orchestrator.store.migrate import migration_files as m; assert m(), 'no migrations in the installed package'" \
 && gpu-orchestrator --help > /dev/null

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

# PORT: the HTTP port (/livez, /readyz, /metrics, /status); Railway injects its
# own value. LOG_FORMAT: one JSON object per line, which Railway's log view parses.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    PORT=8080 \
    LOG_FORMAT=json

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home \
        --shell /usr/sbin/nologin app

# Same base image as the builder, so the venv's interpreter symlinks resolve.
COPY --from=builder /opt/venv /opt/venv

# The `app` user, by number so a runtime can check it is not root.
USER 10001:10001
WORKDIR /home/app

EXPOSE 8080

# Docker's own health probe (Railway ignores it and uses healthcheckPath):
# liveness, i.e. the loop ticked recently.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('PORT', '8080'), timeout=4)"]

# Exec form: the Python process is PID 1 and receives SIGTERM itself. The first
# SIGTERM finishes the action under way and releases the leader lease; a second
# one exits at once. `run` applies pending migrations before its first cycle.
CMD ["gpu-orchestrator", "run"]
