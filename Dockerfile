# stateful-rnn: the service on its runtime dependencies only, as a non-root user.
# Build: docker build -t stateful-rnn .    Run: docker run -p 127.0.0.1:8000:8000 stateful-rnn
# A model file: mount it and point SRNN_MODEL at it (-v ./m.keras:/models/m.keras -e SRNN_MODEL=/models/m.keras).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# The packages alone (no test extras, not editable), so the venv is all the runtime needs: the
# server and the client it depends on (its stream and demo commands). One TensorFlow (the PyPI
# build, which runs on the CPU here); for a GPU image install ".[gpu]" on a CUDA base instead.
COPY pyproject.toml README.md LICENSE ./
COPY client ./client
COPY app ./app
RUN /opt/venv/bin/pip install ./client .

FROM python:3.11-slim
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
