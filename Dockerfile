# harmspot service image. Not built on the development machines (no Docker engine there); kept minimal.
FROM python:3.11-slim
WORKDIR /srv/harmspot
COPY pyproject.toml README.md ./
COPY app ./app
COPY geodata ./geodata
COPY hotspots ./hotspots
COPY rtm ./rtm
COPY sample ./sample
RUN pip install --no-cache-dir .
ENV HARMSPOT_DATA_DIR=/data HARMSPOT_HOST=0.0.0.0 HARMSPOT_PORT=8000
VOLUME /data
EXPOSE 8000
CMD ["harmspot", "serve"]
