# Stand-ins for the public base images deploy/Dockerfile and deploy/docker-compose.yml name, built
# from Debian packages for machines that cannot reach Docker Hub (scripts/offline-images builds
# and tags them). Each keeps the interface the files rely on: the commands on PATH, the config
# paths, the default command.
ARG DEBIAN=stt-debian:bookworm

# python:3.11-slim: Debian bookworm's own Python is 3.11; pip installs system-wide, as there.
FROM ${DEBIAN} AS python
ENV LANG=C.UTF-8 PIP_BREAK_SYSTEM_PACKAGES=1
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip ca-certificates \
    && ln -s /usr/bin/python3 /usr/local/bin/python && ln -s /usr/bin/pip3 /usr/local/bin/pip \
    && rm -rf /var/lib/apt/lists/*
CMD ["python3"]

# redis:7: Debian's redis-server 7.0, data in /data.
FROM ${DEBIAN} AS redis
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* && mkdir /data && chown redis:redis /data
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]

# nginx:1.27: Debian's nginx, /etc/nginx/nginx.conf, logs to the container's output.
FROM ${DEBIAN} AS nginx
RUN apt-get update && apt-get install -y --no-install-recommends nginx-light \
    && rm -rf /var/lib/apt/lists/* \
    && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]

# prom/prometheus: Debian's prometheus, /etc/prometheus/prometheus.yml, data in /prometheus.
FROM ${DEBIAN} AS prometheus
RUN apt-get update && apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* && mkdir /prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
