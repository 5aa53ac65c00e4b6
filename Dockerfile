# syntax=docker/dockerfile:1
# The LLMSafeSpace hook server: gunicorn serving hooks.server.app:app (the Helm chart runs this image).
#   docker build -t llmsafespace-hooks .
#   docker run --rm --read-only --tmpfs /tmp -p 8080:8080 llmsafespace-hooks
# Pin the base by digest too (python:3.11.14-slim-bookworm@sha256:...) in your registry's build.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- builder: wheels of the pinned requirements, installed into a virtualenv -------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY requirements.txt .
# Every pin has a binary wheel or a pure-Python sdist: no compiler is needed, and none reaches
# the final stage either way.
RUN pip wheel --wheel-dir /wheels -r requirements.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels -r requirements.txt \
 && /opt/venv/bin/pip uninstall --yes pip setuptools \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +
COPY hooks/ /app/hooks/
# Byte-compile at build time: the running container never writes .pyc files.
RUN /opt/venv/bin/python -m compileall -q /opt/venv/lib /app/hooks

# --- runtime: the interpreter, the virtualenv and the app; no pip, no wheels, no build tools ---
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="llmsafespace-hooks" \
      org.opencontainers.image.description="Metacontroller hooks of LLMSafeSpace (gunicorn + Flask)"
RUN python -m pip uninstall --yes pip setuptools wheel \
 && groupadd --system --gid 10001 hooks \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin hooks
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
WORKDIR /app
# Read-only root filesystem: nothing is written outside /tmp (gunicorn's worker heartbeat files,
# tempfile); no bytecode writes; gunicorn's control socket is disabled in hooks/server/gunicorn_conf.py.
# PORT gives gunicorn its default bind 0.0.0.0:8080; the chart passes --bind in GUNICORN_CMD_ARGS.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    HOME=/tmp \
    PORT=8080
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["gunicorn", "--config", "hooks/server/gunicorn_conf.py", "hooks.server.app:app"]
