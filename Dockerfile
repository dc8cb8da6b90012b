# The hpo image: `docker build --build-arg VARIANT=cpu .` (default) or VARIANT=cuda.
# CPU: torch's CPU wheels (small, no CUDA libraries). CUDA: PyPI's torch, which brings
# its own CUDA runtime; the host needs an NVIDIA driver and the container toolkit.
FROM python:3.11-slim

ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home hpo
WORKDIR /opt/hpo

RUN if [ "$VARIANT" = "cpu" ]; then \
        pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_CPU_INDEX}"; \
    elif [ "$VARIANT" = "cuda" ]; then \
        pip install "torch==${TORCH_VERSION}"; \
    else \
        echo "VARIANT must be cpu or cuda, got ${VARIANT}" >&2; exit 1; \
    fi

COPY pyproject.toml README.md ./
COPY hpo hpo
COPY study_configs study_configs
RUN pip install . && python -c "from hpo.config.compose import compose; compose([])"

USER hpo
WORKDIR /home/hpo
ENTRYPOINT ["hpo"]
CMD ["--help"]
