#!/bin/sh
# Entry point of Plaza's container image (see the Dockerfile and the README's
# "Docker and Complement" section). It turns the container's contract into
# Plaza's settings and execs `plaza`, so that plaza is PID 1 and gets
# `docker stop`'s SIGTERM itself. Every PLAZA_* variable passed with
# `docker run -e` wins over what is set here.
#
# It runs at every start of the container, including starts of a container
# committed from a stopped one (Complement's blueprints): nothing here may
# assume a first start. The data directory lives in the container's own file
# system, not in a volume, so `docker commit` keeps it.
set -eu

# The server name: Complement passes it as SERVER_NAME (a bare host name,
# such as hs1, that its Docker network resolves; federation is on 8448).
: "${PLAZA_SERVER_NAME:=${SERVER_NAME:-localhost}}"
: "${PLAZA_DATA_DIR:=/var/lib/plaza}"
: "${PLAZA_LISTEN:=:8008}"
: "${PLAZA_FEDERATION_LISTEN:=:8448}"

# Complement copies a CA into the container before starting it. With it,
# Plaza issues itself a certificate for the server name at every start,
# trusts that CA for outbound federation, and takes the settings the suite
# expects: open registration with m.login.dummy, no rate limits, federation
# to the private addresses its containers live on, and the shared secret
# "complement" for /_synapse/admin/v1/register. Without the CA none of that
# changes: federation stays off unless PLAZA_TLS_CERT/KEY are given.
ca_dir="${PLAZA_COMPLEMENT_CA_DIR:-/complement/ca}"
if [ -f "$ca_dir/ca.crt" ] && [ -f "$ca_dir/ca.key" ]; then
	if [ -z "${PLAZA_TLS_CERT:-}" ]; then
		: "${PLAZA_TLS_CA_CERT:=$ca_dir/ca.crt}"
		: "${PLAZA_TLS_CA_KEY:=$ca_dir/ca.key}"
		export PLAZA_TLS_CA_CERT PLAZA_TLS_CA_KEY
	fi
	: "${PLAZA_FEDERATION_CA_FILE:=$ca_dir/ca.crt}"
	: "${PLAZA_FEDERATION_ALLOW_PRIVATE:=true}"
	: "${PLAZA_REGISTRATION:=open}"
	: "${PLAZA_RATE_LIMIT:=false}"
	: "${PLAZA_REGISTRATION_SHARED_SECRET:=complement}"
	export PLAZA_FEDERATION_CA_FILE PLAZA_FEDERATION_ALLOW_PRIVATE PLAZA_REGISTRATION \
		PLAZA_RATE_LIMIT PLAZA_REGISTRATION_SHARED_SECRET
fi

export PLAZA_SERVER_NAME PLAZA_DATA_DIR PLAZA_LISTEN PLAZA_FEDERATION_LISTEN
exec plaza "$@"
