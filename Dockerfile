# syntax=docker/dockerfile:1
#
# Antechamber: one image for every service. The role is chosen by the command:
#   docker run antechamber serve scheduling --host 0.0.0.0 --port 8080
#   docker run antechamber migrate --all
#
ARG PYTHON_IMAGE=python:3.11-slim

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

# A compiler only for dependencies that ship no wheel for this platform;
# it stays in this stage and never reaches the runtime image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

WORKDIR /src
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

# Numeric uid/gid so Kubernetes can verify runAsNonRoot.
RUN groupadd --system --gid 10001 antechamber \
    && useradd --system --uid 10001 --gid 10001 \
       --home-dir /home/antechamber --create-home --shell /usr/sbin/nologin antechamber

COPY --from=builder /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ANTECHAMBER_LOG_LEVEL=info

WORKDIR /home/antechamber
USER 10001:10001

EXPOSE 8080

ENTRYPOINT ["antechamber"]
CMD ["--help"]
