# shipyard's own image: the CLI, `shipyard serve`, and the job entry point the backup CronJobs run
# (`python -m shipyard.jobs --request ...`, see src/shipyard/render/_backups.py).
#
#   docker build -t shipyard/shipyard:$(python -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])') .
#
# The tag is the package version: `backup.image` defaults to shipyard/shipyard:<version>.
# Nothing secret is built in: the spec comes from a ConfigMap, secrets from the pod's environment.

# Stage 1: build shipyard's wheel (and its dependencies' wheels) with pip, away from the runtime.
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Stage 2: the runtime, with the tools shipyard drives.
FROM python:3.11.11-slim-bookworm

# Debian bookworm's PostgreSQL 15: client tools for dumps (pg_dump, pg_restore, psql) and the server
# binaries verification restores into (initdb, pg_ctl); pgBackRest; Redis (redis-cli for copies,
# redis-server for scratch restores and its version in each manifest); restic.
# createcluster.conf first: no `main` cluster is created (or started) inside the image.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN mkdir -p /etc/postgresql-common \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates \
        pgbackrest \
        postgresql-15 \
        postgresql-client-15 \
        redis-server \
        redis-tools \
        restic \
        tzdata \
    && rm -rf /var/lib/apt/lists/*

COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels /wheels/shipyard-*.whl \
    && rm -rf /wheels

# A numeric user, so that the kubelet can check `runAsNonRoot` (render/_backups.BACKUP_UID).
RUN groupadd --gid 10001 shipyard \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin shipyard

# The root filesystem is read-only in the cluster: state, caches and scratch servers go to /tmp
# (an emptyDir there).
ENV PATH="/usr/lib/postgresql/15/bin:${PATH}" \
    HOME=/tmp \
    SHIPYARD_STATE_DIR=/tmp/shipyard \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 10001:10001

ENTRYPOINT ["shipyard"]
CMD ["--help"]
