# One image for every module: the project with its runtime dependencies, PsychoPy and Xvfb.
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends \
        xvfb xauth libgl1 libglu1-mesa libegl1 libgl1-mesa-dri libglib2.0-0 libxrender1 libxi6 \
        libxkbcommon0 libfontconfig1 libdbus-1-3 netcat-openbsd gcc \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared_utils ./shared_utils
COPY services ./services
COPY control_room ./control_room
COPY config ./config
RUN pip install --no-cache-dir '.[presenter]'
# Inside the compose network all modules share the host's loopback (network_mode: host).
ENV LSLAPICFG=/app/config/lsl_loopback.cfg PYTHONUNBUFFERED=1
