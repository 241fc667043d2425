# Plaza's container image: the `plaza` binary and Debian's PostgreSQL, which
# Plaza runs as its private embedded cluster inside the container. It meets
# Complement's container contract (see docker/entrypoint.sh and the README's
# "Docker and Complement" section).
#
#   make docker                      # binary, then this image, tagged plaza:latest
#   make docker BASE=my/debian:12    # from another Debian bookworm image
#
# The binary is built outside the image (make docker does it, without cgo)
# and copied in: the image needs no Go toolchain and its build no module
# downloads. BASE is any Debian bookworm image; where none can be pulled,
# `make docker-base` makes one with debootstrap.
ARG BASE=debian:bookworm
FROM ${BASE}

# Debian's postgresql package would create and configure a cluster of its
# own (15/main) that nothing here uses: Plaza makes its own with initdb.
RUN mkdir -p /etc/postgresql-common \
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql ca-certificates \
 && rm -rf /var/lib/apt/lists/*

COPY bin/plaza-docker /usr/local/bin/plaza
COPY docker/entrypoint.sh /usr/local/bin/plaza-entrypoint

# The embedded cluster is created and migrated here, once, so that a new
# container answers /versions without waiting for initdb. Nothing in it
# depends on the server name, which comes at run time.
#
# No VOLUME for the data: Complement commits stopped containers and starts
# them again, and `docker commit` leaves volumes out. Mount one at
# /var/lib/plaza yourself to keep data apart from the container.
ENV PLAZA_DATA_DIR=/var/lib/plaza
RUN plaza migrate --log-format text

# Client API on plain HTTP, federation on HTTPS.
EXPOSE 8008 8448
# plaza is PID 1 (the entry point execs it) and shuts down on SIGTERM:
# requests in flight finish, then PostgreSQL stops.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/plaza-entrypoint"]
CMD ["serve"]
