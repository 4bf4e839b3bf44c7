#!/bin/sh
# Entry point of the offline PostgreSQL 15 test image. It behaves like the official
# image where the tests rely on it: POSTGRES_USER becomes the superuser, POSTGRES_DB is
# created, the data lives in PGDATA, and the server listens on its unix socket only
# (test containers run with --network none).
set -eu
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

mkdir -p "$PGDATA" /var/run/postgresql
chown -R postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
chmod 2777 /var/run/postgresql

as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  as_postgres initdb --username="$POSTGRES_USER" --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  {
    echo "listen_addresses = ''"
    echo "unix_socket_directories = '/var/run/postgresql'"
    echo "fsync = ${POSTGRES_FSYNC:-on}"
  } >> "$PGDATA/postgresql.conf"
  if [ "$POSTGRES_DB" != "postgres" ]; then
    as_postgres postgres --single -D "$PGDATA" postgres >/dev/null <<SQL
CREATE DATABASE "$POSTGRES_DB" OWNER "$POSTGRES_USER";
SQL
  fi
fi

exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" "$@"
