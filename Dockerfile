# gamelift-token-broker: a small image that runs the broker as an unprivileged PID 1.
#
# The tag pins the Python minor version and the Debian release. For builds that are
# reproducible byte for byte, pin the digest too; look it up where you build, for example
#   docker buildx imagetools inspect python:3.12-slim-bookworm
# and write FROM python:3.12-slim-bookworm@sha256:<digest> in both stages.
# Both stages must use the same image: the venv's interpreter is a link to /usr/local/bin.

FROM python:3.12-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# A venv, so the runtime stage copies exactly one directory and the base image's
# site-packages stay untouched.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# pyproject.toml names README.md as the long description, so setuptools needs it to build.
COPY pyproject.toml README.md requirements.lock ./
COPY service ./service
# The lock pins every dependency with its hashes (refresh it with .ci/lock); the project
# itself is installed on top of it and adds nothing.
RUN pip install --no-cache-dir --require-hashes -r requirements.lock \
    && pip install --no-cache-dir --no-deps .


FROM python:3.12-slim-bookworm

COPY --from=build /opt/venv /opt/venv

# PYTHONUNBUFFERED: log lines reach `docker logs` / the kubelet as they are written.
# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only in Kubernetes; pip already
# compiled the bytecode at build time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Numeric, so Kubernetes can check runAsNonRoot without a passwd entry. The broker writes
# nothing to disk and needs no home directory.
USER 10001:10001

EXPOSE 8787

# uvicorn drains in-flight requests on SIGTERM (TOKEN_BROKER_SHUTDOWN_GRACE_SECONDS).
STOPSIGNAL SIGTERM

# urllib rather than curl: the slim image has no curl, and adding it only for this
# would grow the image. /healthz never calls AWS, so a GameLift outage does not make
# the container unhealthy. urlopen raises on a refused connection and on any 4xx/5xx.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8787/healthz', timeout=3)"]

# Exec form, so the broker is PID 1 and receives SIGTERM itself (no shell in between).
# It installs its own SIGTERM handler; the SIGTERM that uvicorn re-raises after draining
# is ignored by the kernel for PID 1, and the process then exits with status 0.
# Loopback by default: `docker run -p 8787:8787` must not publish tokens on every
# interface, and a sidecar shares its pod's network namespace anyway. To serve other pods,
# pass `--host 0.0.0.0` and set TOKEN_BROKER_ALLOWED_PEERS (the DaemonSet does both).
# Extra `docker run` arguments are appended, for example `docker run IMAGE --emulator`.
ENTRYPOINT ["gamelift-token-broker", "--host", "127.0.0.1", "--port", "8787"]
