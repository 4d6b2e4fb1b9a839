#!/bin/sh
# PostgreSQL's entrypoint in the image testenv builds from Debian's packages.
# It keeps the contract of the official postgres image that the chart relies
# on: POSTGRES_PASSWORD (required), POSTGRES_USER (postgres), POSTGRES_DB (the
# user's name) and PGDATA; an empty PGDATA is initialised, then the server runs
# in the foreground, listening on every address with password authentication.
# It writes only under PGDATA (the root filesystem may be read-only).
set -eu
: "${PGDATA:?PGDATA must be set}"
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "postgres-entrypoint: initialising $PGDATA for user $user, database $db"
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
  printf '%s\n' "$POSTGRES_PASSWORD" |
    initdb -D "$PGDATA" --username="$user" --pwfile=/dev/stdin \
      --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C
  {
    echo "listen_addresses = '*'"
    echo "unix_socket_directories = '/var/run/postgresql'"
  } >>"$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    # Identifiers double-quoted, quotes doubled: any name is taken literally.
    quoted=$(printf '%s' "$db" | sed 's/"/""/g')
    printf 'CREATE DATABASE "%s"\n' "$quoted" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
  echo "postgres-entrypoint: initialised"
fi
# As the official image does on every start: PostgreSQL refuses a data
# directory that its group (a volume's fsGroup) may write.
chmod 700 "$PGDATA"
exec postgres -D "$PGDATA"
