# The CPU embedding server (python -m bookrec.cpu_server) in a small image; used by the "cpu" profile
# of deploy/compose.yaml. Build from the repository root:
#   docker build -f deploy/cpu.Dockerfile -t bookrec-embedding-cpu:0.1.0 .
FROM python:3.11-slim

# torch's CPU build from PyTorch's own index: the default wheel on PyPI carries CUDA (GBs).
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir "transformers>=4.56"

WORKDIR /opt/bookrec
COPY pyproject.toml README.md ./
COPY client client
COPY recommender recommender
COPY deploy/cpu_server deploy/cpu_server
COPY scripts/launch_server.py scripts/launch_server.sh scripts/
# bookrec with its CPU extra; torch is already the CPU build, so pip keeps it.
RUN pip install --no-cache-dir ".[cpu]"

ENV HF_HUB_DISABLE_PROGRESS_BARS=1 PYTHONUNBUFFERED=1
EXPOSE 30000
ENTRYPOINT ["python3", "/opt/bookrec/scripts/launch_server.py"]
CMD ["--cpu", "--host", "0.0.0.0", "--port", "30000", "--no-wait"]
