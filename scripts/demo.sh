#!/usr/bin/env bash
# The lab of design §7 on this machine, in network namespaces only: a node, a fabric gateway and
# two pods made by the real ptp plugin, chained with markroute from conflists/10-ptp-markroute.conflist.
# Shows pod-to-pod traffic crossing the fabric, a fabric deny rule taking effect, then tears down
# and shows the node clean. Needs root; touches nothing in the root namespace's network.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/demo.sh: run as root" >&2; exit 1; }

source scripts/lib/deps.sh
install_debian_packages
install_node_modules
[ -x dist/markroute ] && [ -z "$(find src -newer dist/markroute -print -quit)" ] || npm run --silent build

RUN="mr-demo-$$"
NODE="$RUN-node" FABRIC="$RUN-fabric" POD1="$RUN-pod1" POD2="$RUN-pod2"
WORK=$(mktemp -d)
CNI_PATH_DIRS="/usr/lib/cni:$PWD/dist"

cleanup() {
  for ns in "$POD1" "$POD2" "$FABRIC" "$NODE"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
in_node() { ip netns exec "$NODE" "$@"; }
in_fabric() { ip netns exec "$FABRIC" "$@"; }

say "node and fabric namespaces"
for ns in "$NODE" "$FABRIC" "$POD1" "$POD2"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add "$RUN-n" type veth peer name "$RUN-f"   # created in the root namespace, moved out at once
ip link set "$RUN-n" netns "$NODE"; ip link set "$RUN-f" netns "$FABRIC"
ip -n "$NODE" link set "$RUN-n" name eth0; ip -n "$FABRIC" link set "$RUN-f" name eth0
ip -n "$NODE" addr add 10.224.0.10/24 dev eth0; ip -n "$NODE" link set eth0 up
ip -n "$NODE" route add default via 10.224.0.1
ip -n "$FABRIC" addr add 10.224.0.1/24 dev eth0; ip -n "$FABRIC" link set eth0 up
ip -n "$FABRIC" route add 10.244.0.0/24 via 10.224.0.10          # hairpin pod traffic back to the node
in_node sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.default.rp_filter=1 net.ipv4.conf.eth0.rp_filter=1
in_fabric sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0
in_fabric nft -f - <<'NFT'
table inet nsg {
  counter pod_to_pod {}
  chain forward {
    type filter hook forward priority 0; policy accept;
    ip saddr 10.244.0.0/24 ip daddr 10.244.0.0/24 counter name pod_to_pod
  }
}
NFT
echo "node uplink eth0 10.224.0.10 -> fabric gateway 10.224.0.1 (rp_filter strict on the node)"

# The node's state that matters: rules and chains (an empty built-in table that iptables-nft
# leaves behind is not state), ipsets, policy rules, IPv4 routes of every table, rp_filter.
node_state() {
  in_node iptables-save | grep -E '^(-A|:)' | grep -vE '^:(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) ' || true
  in_node ipset list; ip -n "$NODE" rule; ip -n "$NODE" -4 route show table all
  in_node sysctl net.ipv4.conf.eth0.rp_filter
}
before=$(node_state)

# A libcni-style chain: each plugin of the conflist in order for ADD, prevResult passed along.
conflist=$(node -e '
  const c = JSON.parse(require("fs").readFileSync("conflists/10-ptp-markroute.conflist", "utf8"));
  const [ptp, mr] = c.plugins;
  ptp.ipam.dataDir = process.argv[1] + "/ipam";
  Object.assign(mr, { stateDir: process.argv[1] + "/state", logFile: process.argv[1] + "/markroute.log" });
  console.log(JSON.stringify(c));' "$WORK")
plugin_conf() { # conflist index prevResult
  node -e '
    const c = JSON.parse(process.argv[1]); const p = c.plugins[Number(process.argv[2])];
    const prev = process.argv[3] ? { prevResult: JSON.parse(process.argv[3]) } : {};
    console.log(JSON.stringify({ cniVersion: c.cniVersion, name: c.name, ...p, ...prev }));' "$conflist" "$1" "${2:-}"
}
cni() { # command plugin-binary container-id netns stdin
  echo "$5" | in_node env CNI_COMMAND="$1" CNI_CONTAINERID="$3" CNI_NETNS="$4" CNI_IFNAME=eth0 \
    CNI_PATH="$CNI_PATH_DIRS" CNI_ARGS="K8S_POD_NAMESPACE=demo;K8S_POD_NAME=$3;IgnoreUnknown=1" "$2"
}
declare -A RESULT
for pod in pod1 pod2; do
  ns="$RUN-$pod"
  say "ADD $pod: ptp, then markroute"
  r=$(cni ADD /usr/lib/cni/ptp "$pod" "/run/netns/$ns" "$(plugin_conf 0)")
  RESULT[$pod]=$(cni ADD dist/markroute "$pod" "/run/netns/$ns" "$(plugin_conf 1 "$r")")
  echo "${RESULT[$pod]}"
done
ip2=$(ip -n "$POD2" -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)

say "what markroute installed in the node namespace"
in_node iptables-save -t mangle | grep -E 'MARKROUTE|PREROUTING -j'
in_node ipset list | grep -E '^Name|^[0-9]'
ip -n "$NODE" rule | grep fwmark; ip -n "$NODE" route show table 100
echo "uplink rp_filter: $(in_node cat /proc/sys/net/ipv4/conf/eth0/rp_filter) (2 = loose)"

say "pod1 -> pod2 ($ip2): the packets go out to the fabric and back"
ip netns exec "$POD1" ping -c 3 -W 1 "$ip2" | tail -2
in_fabric nft list counter inet nsg pod_to_pod | grep packets

say "the fabric's NSG denies pod1 -> pod2"
in_fabric nft insert rule inet nsg forward ip daddr "$ip2" icmp type echo-request drop
if ip netns exec "$POD1" ping -c 2 -W 1 "$ip2" >/dev/null; then echo "UNEXPECTED: ping went through"; exit 1; fi
echo "ping blocked at the fabric, as the NSG says"

say "DEL both pods (markroute, then ptp), then the node again"
for pod in pod2 pod1; do
  cni DEL dist/markroute "$pod" "/run/netns/$RUN-$pod" "$(plugin_conf 1 "${RESULT[$pod]}")"
  cni DEL /usr/lib/cni/ptp "$pod" "/run/netns/$RUN-$pod" "$(plugin_conf 0 "${RESULT[$pod]}")"
done
after=$(node_state)
if [ "$before" = "$after" ]; then echo "node clean: iptables, ipsets, rules, routes and rp_filter are as before"; else diff <(echo "$before") <(echo "$after"); exit 1; fi
