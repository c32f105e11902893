# syntax=docker/dockerfile:1.7
# One Dockerfile, four targets:
#   base         Python, a non-root user, the paths the platform uses
#   development  build tools, the test extra, `dagster dev` (docker build --target development)
#   production   the code server for the CPU steps, installed from wheels; no compilers (the default target)
#   gpu          CUDA 12 + cuDNN 9 runtime (what CTranslate2 4.x needs) for the transcription step
# The wheels are built in a throw-away `wheels` stage, so build tools never reach production or gpu.

ARG PYTHON_VERSION=3.12
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

FROM python:${PYTHON_VERSION}-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    DIARY_DATA_DIR=/var/diary/state
RUN groupadd --system --gid 10001 diary \
    && useradd --system --uid 10001 --gid diary --home-dir /opt/dagster --shell /usr/sbin/nologin diary \
    && mkdir -p /opt/dagster/dagster_home /opt/dagster/app /var/diary/state \
    && chown -R diary:diary /opt/dagster /var/diary
WORKDIR /opt/dagster/app

FROM base AS wheels
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py constraints.txt README.md ./
COPY diary_platform ./diary_platform
RUN pip wheel --constraint constraints.txt --wheel-dir /wheels .

FROM base AS development
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential git espeak-ng ffmpeg \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py constraints.txt README.md ./
COPY diary_platform ./diary_platform
RUN pip install --constraint constraints.txt --editable ".[test]"
COPY --chown=diary:diary . .
USER 10001:10001
EXPOSE 3000
CMD ["dagster", "dev", "--host", "0.0.0.0", "--port", "3000", "-m", "diary_platform.definitions"]

FROM base AS production
COPY --from=wheels /wheels /tmp/wheels
RUN pip install --no-index --find-links /tmp/wheels /tmp/wheels/diary_platform-*.whl \
    && rm -rf /tmp/wheels
COPY --chown=diary:diary workspace.yaml dagster_cloud.yaml ./
USER 10001:10001
EXPOSE 3030
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["dagster", "api", "grpc-health-check", "--port", "3030"]
CMD ["dagster", "api", "grpc", "--host", "0.0.0.0", "--port", "3030", "-m", "diary_platform.definitions"]

FROM ${CUDA_IMAGE} AS gpu
# The CUDA image brings the libraries CTranslate2 loads (cuBLAS 12, cuDNN 9); Ubuntu 24.04's Python
# is 3.12, the same as the wheels stage, so the same wheels install here.
ARG WHISPER_MODEL=large-v3-turbo
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    DIARY_DATA_DIR=/var/diary/state \
    DIARY_DEVICE=cuda \
    DIARY_COMPUTE_TYPE=float16 \
    DIARY_MODEL=${WHISPER_MODEL} \
    HF_HOME=/opt/models \
    PATH=/opt/venv/bin:${PATH}
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && groupadd --system --gid 10001 diary \
    && useradd --system --uid 10001 --gid diary --home-dir /opt/dagster --shell /usr/sbin/nologin diary \
    && mkdir -p /opt/dagster/dagster_home /opt/dagster/app /var/diary/state /opt/models \
    && chown -R diary:diary /opt/dagster /var/diary
WORKDIR /opt/dagster/app
COPY --from=wheels /wheels /tmp/wheels
RUN pip install --no-index --find-links /tmp/wheels /tmp/wheels/diary_platform-*.whl \
    && rm -rf /tmp/wheels
# The model is fetched into the Hugging Face cache when the image is built, never when it runs (the
# platform loads it with local_files_only). DIARY_MODEL names it, not a path, so the code server on the
# CPU image, given the same DIARY_MODEL, computes the same transcripts code_version as this image.
RUN python -c "import sys; from faster_whisper import download_model; download_model(sys.argv[1])" "${WHISPER_MODEL}"
COPY --chown=diary:diary workspace.yaml dagster_cloud.yaml ./
USER 10001:10001
EXPOSE 3030
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["dagster", "api", "grpc-health-check", "--port", "3030"]
CMD ["dagster", "api", "grpc", "--host", "0.0.0.0", "--port", "3030", "-m", "diary_platform.definitions"]

# A plain `docker build .` builds the CPU production image.
FROM production AS default
