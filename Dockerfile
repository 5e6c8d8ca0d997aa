# gigaudit: one image for the API (`serve`) and the workers (`worker`), chosen by argument.
# CUDA-capable: the PyPI torch wheels bring the CUDA runtime libraries; the node provides the driver
# (NVIDIA container toolkit / device plugin). The same image runs CPU-only where no GPU is present.
#   docker build -t gigaudit .
#   docker run gigaudit serve --host 0.0.0.0 --redis-url redis://redis:6379/0 --store file:///data/store
#   docker run --gpus all gigaudit worker --device cuda:0 --redis-url redis://redis:6379/0 --store s3://bucket/store
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md* ./
COPY client ./client
COPY service ./service
# s3fs: the artifact store may be an S3-compatible bucket (fsspec's s3:// protocol).
RUN python -m venv /opt/gigaudit \
    && /opt/gigaudit/bin/pip install --no-cache-dir --upgrade pip \
    && /opt/gigaudit/bin/pip install --no-cache-dir ".[server,remote]"
# Architecture plugins (entry-point group gigaudit.architectures, see examples/gigaudit-example-plugin): pip
# requirements installed next to gigaudit, e.g. --build-arg PLUGINS="./examples/gigaudit-example-plugin".
# COPY examples ./examples
# ARG PLUGINS=""
# RUN if [ -n "$PLUGINS" ]; then /opt/gigaudit/bin/pip install --no-cache-dir $PLUGINS; fi

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 gigaudit \
    && useradd --uid 10001 --gid gigaudit --home-dir /home/gigaudit --create-home --shell /usr/sbin/nologin gigaudit \
    && mkdir -p /var/lib/gigaudit && chown gigaudit:gigaudit /var/lib/gigaudit
COPY --from=build /opt/gigaudit /opt/gigaudit
ENV PATH=/opt/gigaudit/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GIGAUDIT_DATA_DIR=/var/lib/gigaudit \
    GIGAUDIT_STORE=file:///var/lib/gigaudit/store
USER 10001:10001
WORKDIR /home/gigaudit
# gRPC API and the plaintext health-probe port (serve --health-port 8081)
EXPOSE 50051 8081
ENTRYPOINT ["python", "-m", "gigaudit_server"]
CMD ["serve", "--host", "0.0.0.0", "--health-port", "8081"]
