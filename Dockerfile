# stateful-rnn: the service on its runtime dependencies only, as a non-root user.
# Build: docker build -t stateful-rnn .    Run: docker run -p 127.0.0.1:8000:8000 stateful-rnn
# A model file: mount it and point SRNN_MODEL at it (-v ./m.keras:/models/m.keras -e SRNN_MODEL=/models/m.keras).

# The base pinned to a patch release, the same in both stages (a digest would pin it further; see
# docs/deployment.md). Every Python package at the version constraints.txt names.
ARG BASE=python:3.11.11-slim-bookworm

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# The dependencies first, from the two pyproject.toml files and constraints.txt alone: a change to
# the code reuses this layer (TensorFlow is most of the image) and only the layers below run again.
# Runtime dependencies only (no test extras); one TensorFlow (the PyPI build, which runs on the CPU
# here); for a GPU image install ".[gpu]" on a CUDA base instead.
COPY pyproject.toml constraints.txt ./
COPY client/pyproject.toml ./client/
RUN python -c 'import tomllib; [print(d) for f in ("pyproject.toml", "client/pyproject.toml") \
        for d in tomllib.load(open(f, "rb"))["project"]["dependencies"] \
        if not d.startswith("stateful-rnn")]' > /tmp/dependencies.txt \
    && /opt/venv/bin/pip install -c constraints.txt -r /tmp/dependencies.txt
# Then the two packages themselves (not editable), their dependencies already there.
COPY README.md LICENSE ./
COPY client ./client
COPY app ./app
RUN /opt/venv/bin/pip install --no-deps ./client .

FROM ${BASE}
LABEL org.opencontainers.image.title="stateful-rnn" \
      org.opencontainers.image.description="Real-time inference for recurrent Keras models that keeps each client stream's state" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
RUN useradd --system --uid 10001 --home-dir /srv --create-home --shell /usr/sbin/nologin srnn
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SRNN_MODEL=default \
    SRNN_HOST=0.0.0.0 \
    SRNN_PORT=8000
USER srnn
WORKDIR /srv
EXPOSE 8000
# Liveness only (the process answers); readiness (/readyz) is for whoever routes traffic.
# No curl in slim: app.probe (Python's urllib) asks the port of SRNN_PORT, so change the port there,
# not with a --port flag, or the check asks the wrong one.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-m", "app.probe", "/healthz"]
# Exec form: the server is PID 1, so SIGTERM (docker stop, Kubernetes) reaches uvicorn directly and it
# drains in-flight requests and queued chunks before exiting. No CMD: every setting (SRNN_HOST
# included) comes from the environment, so `docker run -e` can change any of them.
ENTRYPOINT ["stateful-rnn", "serve"]
