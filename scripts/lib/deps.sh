# Shared by scripts/test.sh and scripts/demo.sh: install what is missing, and nothing else.
DEBIAN_PACKAGES=(iproute2 procps strace iptables ipset nftables conntrack containernetworking-plugins iperf3 iputils-ping containerd runc gcc libc6-dev)

install_debian_packages() { # [package...] (default: all of DEBIAN_PACKAGES)
  local missing=() p
  [ $# -gt 0 ] || set -- "${DEBIAN_PACKAGES[@]}"
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_node_modules() {
  # `npm ci` only: the lock is complete (every platform's optional packages; checked by
  # test/unit/lockfile.test.ts and test/repo/npm-ci.test.ts), so a lock npm rejects is a bug to fix
  # in the repository, never something to paper over with `npm install`.
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ] \
     || [ package.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund || {
      echo "npm ci failed: package-lock.json is incomplete or out of sync with package.json." >&2
      echo "Regenerate it with the same pins (rm -rf node_modules; npm install --package-lock-only) and commit it." >&2
      return 1
    }
  fi
}
