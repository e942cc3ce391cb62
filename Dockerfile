# syntax=docker/dockerfile:1

# ---- builder: install the project and its dependencies into a virtualenv ----
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

# CPU-only torch first, so `pip install .` finds it already satisfied and
# never pulls the (multi-GB) CUDA build from PyPI.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /src
COPY pyproject.toml README.md ./
COPY service/ service/
RUN pip install .

# ---- runtime: slim image with the venv, migrations and a non-root user ----
FROM python:3.11-slim AS runtime

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DEPO_DATA_DIR=/data

RUN groupadd --system --gid 10001 depo \
 && useradd --system --uid 10001 --gid depo --home-dir /app --no-create-home depo \
 && mkdir -p /data \
 && chown depo:depo /data

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
COPY alembic.ini ./
COPY migrations/ migrations/

USER depo
VOLUME ["/data"]
EXPOSE 8000

# No curl in python:*-slim: use the interpreter. urlopen raises on non-2xx.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

CMD ["depo", "serve", "--host", "0.0.0.0", "--port", "8000"]
