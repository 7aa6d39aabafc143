# CPU image serving one run: docker build -t review-toolkit . && docker run -p 8080:8080 review-toolkit
# Mount another run over /run to serve it instead: -v /path/to/run:/run:ro
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

WORKDIR /app
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY . /app
RUN pip install ".[serve]"

# The default run (bundled MiniLM + logistic regression on the bundled sample), so the image serves
# out of the box; a run mounted at /run replaces it.
RUN review-toolkit train --quiet --output-dir /run

EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health').status != 200)"
CMD ["review-toolkit", "serve", "--run", "/run", "--host", "0.0.0.0"]
