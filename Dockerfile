# One image for every avwap service, the rq worker and the CLI.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TZ=UTC
WORKDIR /app
COPY pyproject.toml README.md ./
COPY avwap ./avwap
COPY shared ./shared
COPY services ./services
COPY data/sample ./data/sample
RUN pip install . && useradd --create-home avwap && mkdir -p /app/artifacts /app/ledger /app/state && chown -R avwap /app
USER avwap
CMD ["avwap", "--help"]
