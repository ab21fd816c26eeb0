# The CPU embedding server (deploy/cpu_server.py) in a small image; used by the "cpu" profile
# of deploy/compose.yaml. Build from the repository root:
#   docker build -f deploy/cpu.Dockerfile -t bookrec-embedding-cpu:0.1.0 .
FROM python:3.11-slim

# torch's CPU build from PyTorch's own index: the default wheel on PyPI carries CUDA (GBs).
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir "transformers>=4.56" numpy

WORKDIR /opt/bookrec
COPY scripts/launch_server.py scripts/launch_server.sh scripts/
COPY deploy/cpu_server.py deploy/

ENV HF_HUB_DISABLE_PROGRESS_BARS=1 PYTHONUNBUFFERED=1
EXPOSE 30000
ENTRYPOINT ["python3", "/opt/bookrec/scripts/launch_server.py"]
CMD ["--cpu", "--host", "0.0.0.0", "--port", "30000", "--no-wait"]
