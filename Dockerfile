# harmspot service image. No Docker engine on the development machines: tests/test_issue13_security.py
# (test_13_15_*) runs this file's CMD with its ENV (only /srv/harmspot, /data and the port remapped) instead.
#
# First start: no API key exists and the bind is not loopback, so `harmspot serve` makes an admin key and prints
# it ONCE to the container log (docker logs <container>), or stores the one given in HARMSPOT_ADMIN_KEY or in the
# file HARMSPOT_ADMIN_KEY_FILE (a Docker secret: -e HARMSPOT_ADMIN_KEY_FILE=/run/secrets/harmspot_admin_key).
# Keep /data on a volume: the keys (salted hashes), the audit log and the offences live there.
FROM python:3.11-slim
WORKDIR /srv/harmspot
COPY pyproject.toml README.md ./
COPY app ./app
COPY geodata ./geodata
COPY hotspots ./hotspots
COPY rtm ./rtm
COPY sample ./sample
# the code runs from /srv/harmspot (PYTHONPATH), so the bundled sample beside it is found; pip installs the
# dependencies and the `harmspot` command. The service runs as an unprivileged user owning only /data (0700).
RUN pip install --no-cache-dir . \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin harmspot \
 && mkdir -p /data && chown harmspot /data && chmod 700 /data
ENV PYTHONPATH=/srv/harmspot HARMSPOT_DATA_DIR=/data HARMSPOT_HOST=0.0.0.0 HARMSPOT_PORT=8000
USER harmspot
VOLUME /data
EXPOSE 8000
CMD ["harmspot", "serve"]
