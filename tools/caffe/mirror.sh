# Sourced by tools/caffe/build.sh and tools/fresh-check.sh: the Debian mirror to fetch from,
# the one the system's apt sources already use (PYTRIM_DEBIAN_MIRROR overrides it).
debian_mirror() {
  if [ -n "${PYTRIM_DEBIAN_MIRROR:-}" ]; then echo "$PYTRIM_DEBIAN_MIRROR"; return; fi
  local uri=""
  # deb822 sources first (Debian 12's default), then one-line sources.list entries.
  uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ && u && $0 !~ /security/ {print u; exit}' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" && $0 !~ /security/ { for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit} }' \
          /etc/apt/sources.list | head -n1 || true)
  fi
  [ -n "$uri" ] || uri="http://deb.debian.org/debian"
  echo "$uri"
}
