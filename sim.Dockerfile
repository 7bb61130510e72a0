# The platform emulators (launcher/sim) as a service, for compose.yaml. Build context: the repo.
# The emulators drive the host's docker engine (instances and kernels are sibling containers),
# so the image carries the docker CLI and compose.yaml mounts the engine's socket.
#   docker build -f sim.Dockerfile --build-arg BASE_IMAGE=launch-base:local -t launch-sim .
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="launch-sim" \
      org.opencontainers.image.description="Vast.ai, Kaggle, Drive and Colab emulators of launch"

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# docker.io for its CLI (the emulators run `docker run/kill/rm`); ssh tools for instances that
# fall back to processes.
RUN export DEBIAN_FRONTEND=noninteractive \
    && apt-get update -q \
    && apt-get install -y -q --no-install-recommends docker.io openssh-server openssh-client \
       python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv

COPY pyproject.toml README.md /src/
COPY launcher /src/launcher
# docker: the Vast emulator's instances are containers of the requested image on the host's
# engine (without the SDK it refuses to start rather than fall back to processes)
RUN python3 -m pip install -q "/src[vast,sim,docker]"

ENTRYPOINT ["launch", "sim", "serve"]
