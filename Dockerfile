# syntax=docker/dockerfile:1
#
# Antechamber: one image for every service and for the web client. The role is the command:
#   docker run -p 8101:8080 antechamber serve scheduling --port 8080
#   docker run -p 8100:8080 antechamber serve web --port 8080
#   docker run antechamber migrate --all
#
# The HEALTHCHECK asks http://127.0.0.1:8080/healthz, so run services with `--port 8080`
# (docker-compose.yml and the Helm chart do). Without --port a service listens on its own
# default port (8101-8105, web 8100) and the health check fails.
#
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------
# Builder: install the project and its dependencies into a self-contained venv.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

# Extra packages baked into the image. The OTLP exporter is needed for
# ANTECHAMBER_OTEL_EXPORTER=otlp; set to "" to leave it out.
ARG EXTRA_PACKAGES="opentelemetry-exporter-otlp-proto-http"

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A compiler for the media node's C loop (services/media/_fastpath.c, declared in pyproject.toml) and
# for dependencies that ship no wheel for this platform; it stays in this stage and never
# reaches the runtime image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

WORKDIR /src
# .dockerignore keeps .env, .venv, tests, docs and deploy out of the context.
COPY . .
RUN pip install --upgrade pip \
    && pip install . ${EXTRA_PACKAGES}

# ---------------------------------------------------------------------------
# Runtime: the venv, a non-root user, nothing else.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="antechamber" \
      org.opencontainers.image.description="Self-hosted telehealth video sessions" \
      org.opencontainers.image.licenses="Apache-2.0"

# Numeric uid/gid so Kubernetes can verify runAsNonRoot. /data belongs to that user: a named
# volume mounted there starts out owned by it (recordings, the mail sink's folder).
RUN groupadd --system --gid 10001 antechamber \
    && useradd --system --uid 10001 --gid 10001 \
       --home-dir /home/antechamber --create-home --shell /usr/sbin/nologin antechamber \
    && install -d -o 10001 -g 10001 -m 0750 /data

COPY --from=builder /opt/venv /opt/venv

# ANTECHAMBER_HTTP_HOST: inside a container, listen on every interface (`--host` overrides).
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ANTECHAMBER_HTTP_HOST=0.0.0.0 \
    ANTECHAMBER_LOG_LEVEL=info

WORKDIR /home/antechamber
USER 10001:10001

EXPOSE 8080

# Liveness: the process answers on 8080 (/healthz says nothing about Postgres or NATS; /readyz
# does). Python's urllib, because the image has no curl; a non-2xx answer or no answer fails.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["antechamber"]
CMD ["--help"]
