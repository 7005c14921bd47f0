#!/bin/sh
# Makes the secrets compose.yaml expects, once: deploy/.env with the
# PostgreSQL password, and deploy/secrets/ with the internal, admin and
# metrics tokens, the key that signs download links, Grafana's admin password
# and the website's cookie secret. Existing files are kept, so running it again
# changes nothing. An argument names another folder to write into.
#
# The files are readable by everyone (mode 644) because the containers' user
# (uid 10001) must read them through their mounts; the folder secrets/ is
# private (mode 700), so on the host only its owner reaches them.
set -eu
dir=${1:-$(dirname "$0")}
umask 077
mkdir -p "$dir/secrets"
chmod 700 "$dir/secrets"

random() {
  # 32 random bytes as 64 hex characters.
  od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}

keep_or_make() {
  if [ ! -s "$1" ]; then
    random > "$1"
    echo >> "$1"
    echo "made $1"
  fi
  chmod 644 "$1"
}

keep_or_make "$dir/secrets/internal-token"
keep_or_make "$dir/secrets/admin-token"
keep_or_make "$dir/secrets/metrics-token"
keep_or_make "$dir/secrets/link-secret"
keep_or_make "$dir/secrets/grafana-admin-password"
keep_or_make "$dir/secrets/web-cookie-secret"
if [ ! -s "$dir/.env" ]; then
  printf 'POSTGRES_PASSWORD=%s\n' "$(random)" > "$dir/.env"
  echo "made $dir/.env"
fi
if [ ! -e "$dir/secrets/bots.env" ]; then
  : > "$dir/secrets/bots.env"
  echo "made $dir/secrets/bots.env (empty: add TELEGRAM_TOKEN_<ID>=, DISCORD_TOKEN_<ID>= and TESSERA_API_KEY_<ID>= lines for the bots)"
fi
