# genkit on a CUDA GPU: the Gradio app over the shipped models, on 0.0.0.0:7860.
#   docker build -t genkit . && docker run --gpus all -p 7860:7860 genkit
FROM pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime

# libraqm joins emoji sequences when OpenMoji is rendered (training / evaluation data)
RUN apt-get update && apt-get install -y --no-install-recommends libraqm0 libfribidi0 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY genkit genkit
COPY pipelines pipelines
COPY training training
COPY weights weights
COPY app.py .
RUN pip install --no-cache-dir ".[gpu]"

ENV GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860 GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1
EXPOSE 7860
CMD ["python", "app.py"]
