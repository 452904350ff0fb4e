# Shared by scripts/test.sh and scripts/demo.sh: install what is missing, and nothing else.
DEBIAN_PACKAGES=(iproute2 iptables ipset nftables conntrack containernetworking-plugins iperf3 iputils-ping containerd runc gcc libc6-dev)

install_debian_packages() {
  local missing=()
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_node_modules() {
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    # npm 11 writes only this platform's optional packages of some dependencies (rollup's) into the
    # lock, and its own `npm ci` then calls the lock out of sync; `npm install --no-save` installs
    # the same locked versions without touching package.json or the lock.
    npm ci --no-audit --no-fund || npm install --no-save --no-audit --no-fund
  fi
}
