# bookrec itself (the CLI, the library, the PostgreSQL driver, the recommendation service), no
# model: for the index job of deploy/compose.yaml's "postgres" profile, its "serve" service and
# deploy/k8s/serve. Build from the repository root:
#   docker build -f deploy/bookrec.Dockerfile -t bookrec:0.1.0 .
FROM python:3.11-slim

WORKDIR /opt/bookrec
COPY pyproject.toml README.md ./
COPY client client
COPY recommender recommender
COPY deploy/cpu_server deploy/cpu_server
RUN pip install --no-cache-dir ".[postgres]" \
    && pip install --no-cache-dir ".[serve]"

# bookrec serve's port in deploy/compose.yaml and deploy/k8s/serve.
EXPOSE 8080

ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["bookrec"]
CMD ["--help"]
