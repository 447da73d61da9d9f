#!/usr/bin/env bash
# PostgreSQL server binaries for the test suite.
#
#   .ci/postgres.sh find-binaries     print the bin dir holding initdb + pg_ctl, or exit 1
#   .ci/postgres.sh ensure-binaries   same, installing Debian's `postgresql` first if missing
#
# The directory is printed alone on stdout (progress goes to stderr), so callers do
#   export OUTDIAL_PG_BIN="$(.ci/postgres.sh ensure-binaries)"
# The server itself is started by the test suite (tests/support/postgres.py).
set -euo pipefail

log() { printf 'postgres.sh: %s\n' "$*" >&2; }

has_binaries() {
  [[ -x "$1/initdb" && -x "$1/pg_ctl" && -x "$1/postgres" ]]
}

find_binaries() {
  local dir exe
  if [[ -n "${OUTDIAL_PG_BIN:-}" ]] && has_binaries "$OUTDIAL_PG_BIN"; then
    printf '%s\n' "$OUTDIAL_PG_BIN"
    return 0
  fi
  # Newest major version first.
  while IFS= read -r dir; do
    if has_binaries "$dir"; then
      printf '%s\n' "$dir"
      return 0
    fi
  done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -t/ -k4,4 -V -r)
  if exe="$(command -v initdb 2>/dev/null)"; then
    dir="$(dirname "$(readlink -f "$exe")")"
    if has_binaries "$dir"; then
      printf '%s\n' "$dir"
      return 0
    fi
  fi
  return 1
}

install_binaries() {
  local sudo=()
  if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      log "PostgreSQL binaries are missing and installing them needs root (apt-get install postgresql)"
      return 1
    fi
  fi
  log "installing Debian's postgresql package"
  # Binaries only: no 'main' cluster and no system server on port 5432.
  "${sudo[@]}" mkdir -p /etc/postgresql-common/createcluster.d
  echo 'create_main_cluster = false' |
    "${sudo[@]}" tee /etc/postgresql-common/createcluster.d/outdial-no-main-cluster.conf >/dev/null
  "${sudo[@]}" apt-get update -qq >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends postgresql >&2 </dev/null
}

case "${1:-}" in
  find-binaries)
    find_binaries
    ;;
  ensure-binaries)
    if ! find_binaries; then
      install_binaries
      find_binaries || { log "postgresql installed, yet no initdb/pg_ctl found"; exit 1; }
    fi
    ;;
  *)
    echo "usage: $0 find-binaries | ensure-binaries" >&2
    exit 2
    ;;
esac
