# The flowyte server: `docker run -p 8080:8080 -v flowyte-data:/data flowyte`.
# Installs the same package `./dev` installs (without the dev extras); state lives in the /data volume.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLOWYTE_DATA_DIR=/data

WORKDIR /src
# The repository's sources only (not .venv or .flowyte, which may exist in a developer's checkout).
COPY pyproject.toml README.md ./
COPY control_api ./control_api
COPY runtime ./runtime
COPY pipeline ./pipeline
COPY telephony ./telephony
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /data flowyte \
    && mkdir -p /data \
    && chown flowyte /data

USER flowyte
WORKDIR /data
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["flowyte"]
CMD ["serve", "--host", "0.0.0.0"]
