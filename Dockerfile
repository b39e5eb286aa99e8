# shoal: one node per container. Build: docker build -t shoal .
# Run: docker run -e SHOAL_REDIS=redis://redis:6379/0 -e SHOAL_TOKEN=... -p 8080:8080 shoal
#
# BASE may be overridden (--build-arg BASE=...) with any Debian-like image that has python3 with venv.
# Every dependency is installed at the version constraints.txt pins (python3 scripts/lock.py refreshes it).
# PIP_EXTRA adds pip options to the one install, e.g. "--no-index --find-links=/src/wheelhouse" to build
# offline from wheels placed in the build context (deploy/podman-image.sh does that).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ARG PIP_EXTRA=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY . /src
RUN python3 -m venv /opt/shoal \
    && /opt/shoal/bin/pip install ${PIP_EXTRA} -c /src/constraints.txt /src \
    && /opt/shoal/bin/shoal --version

FROM ${BASE}
LABEL org.opencontainers.image.title="shoal" \
      org.opencontainers.image.description="A self-healing task cluster node" \
      org.opencontainers.image.licenses="MIT"
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/shoal --no-create-home \
        --shell /usr/sbin/nologin shoal \
    && mkdir -p /var/lib/shoal \
    && chown shoal:shoal /var/lib/shoal
COPY --from=build /opt/shoal /opt/shoal
# One node, listening on every interface of the container; the name and the host other nodes use to reach
# it default to the container's hostname. SHOAL_REDIS (and SHOAL_TOKEN, shared by all nodes) come from
# the deployment; without SHOAL_REDIS the node starts an embedded Redis in the data volume.
ENV PATH=/opt/shoal/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SHOAL_DATA_DIR=/var/lib/shoal \
    SHOAL_HTTP=0.0.0.0:8080 \
    SHOAL_GRPC=0.0.0.0:6666 \
    SHOAL_PROXY=0.0.0.0:3128
VOLUME ["/var/lib/shoal"]
WORKDIR /var/lib/shoal
USER 10001:10001
EXPOSE 8080 6666 3128
# Ready = the store answers and a master is known (GET /readyz; no token needed). Any error exits 1.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; h, _, p = os.environ.get('SHOAL_HTTP', '0.0.0.0:8080').rpartition(':'); h = h.strip('[]'); h = '127.0.0.1' if h in ('', '0.0.0.0', '::') else h; u.build_opener(u.ProxyHandler({})).open(f'http://{h}:{p}/readyz', timeout=2)"]
# The node is PID 1 (exec form, no shell): it handles SIGTERM itself (stops taking work, lets running tasks
# finish within shutdown_grace, hands back the rest, exits 0), and it waits for its own children.
# Give the container more stop time than shutdown_grace (30 s by default).
STOPSIGNAL SIGTERM
ENTRYPOINT ["shoal"]
CMD ["node"]
