#!/usr/bin/env bash
# markroute end to end on this machine, in network namespaces of its own: a node, a "fabric"
# gateway standing in for the cloud network (with an NSG that counts and can deny pod-to-pod
# traffic), and two pods made by the real ptp plugin chained with markroute
# (conflists/10-ptp-markroute.conflist, as libcni would run it).
# Shows the objects markroute installs for the backend in use, pod-to-pod traffic crossing the
# fabric, a fabric deny rule taking effect, then deletes the pods and checks that the node is
# clean (no markroute object of either backend left, everything else as before).
#
#   scripts/demo.sh [nftables|iptables]    (default: what markroute's `auto` picks)
#
# Needs root. Never touches the root namespace's network: namespaces mr-demo-<pid>-*, temp dir
# /tmp/mr-demo-<pid>.*, both removed on any exit (a watcher removes them if this script is killed).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ME=scripts/demo.sh

usage() { echo "usage: $ME [nftables|iptables]   (default: nftables when \`nft list tables\` works, else iptables)"; }
case "${1:-}" in
  "" | nftables | iptables) ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
esac
[ $# -le 1 ] || { usage >&2; exit 2; }
REQUESTED=${1:-}

# Colour only on a terminal (and not with NO_COLOR): logs get plain text.
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then BOLD=$'\e[1m' GREEN=$'\e[32m' OFF=$'\e[0m'; else BOLD='' GREEN='' OFF=''; fi
if [ -t 2 ] && [ -z "${NO_COLOR:-}" ]; then RED=$'\e[1;31m' EOFF=$'\e[0m'; else RED='' EOFF=''; fi

STEP="start"
say() { STEP="$*"; printf '\n%s== %s%s\n' "$BOLD" "$*" "$OFF"; }
ok() { printf '%sok%s  %s\n' "$GREEN" "$OFF" "$*"; }
die() { printf '%s%s: FAILED%s (%s): %s\n' "$RED" "$ME" "$EOFF" "$STEP" "$*" >&2; exit 1; }
# Any command that fails (set -e, pipefail) is named with its line; in a $(...) both the inner
# command and the assignment around it are named.
on_err() {
  local rc=$1 line=$2 cmd=$3 where="" i
  trap - ERR
  for ((i = 1; i < ${#FUNCNAME[@]} - 1; i++)); do # the functions it happened in, and their callers' lines
    where+=" in ${FUNCNAME[i]}, called from line ${BASH_LINENO[i]}: $(sed -n "${BASH_LINENO[i]}{s/^ *//;p}" "$ME")"
  done
  printf '%s%s: FAILED%s (%s): line %s: `%s` exited %s%s\n' "$RED" "$ME" "$EOFF" "$STEP" "$line" "$cmd" "$rc" "$where" >&2
  exit "$rc"
}
trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR

[ "$(id -u)" = 0 ] || die "run as root (it creates network namespaces)"

STEP="installing what is missing"
source scripts/lib/deps.sh
install_debian_packages iproute2 procps iptables ipset nftables containernetworking-plugins iputils-ping
if ! { command -v node >/dev/null && node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 12) ? 0 : 1)'; }; then
  die "needs Node.js >= 20.12 on PATH (README, Install); Debian 12's own nodejs is 18"
fi
STEP="building dist/markroute"
newer=$(find src scripts/build.mjs -newer dist/markroute -print -quit 2>/dev/null || echo missing)
if [ ! -x dist/markroute ] || [ -n "$newer" ]; then
  echo "building dist/markroute (it is missing or older than src/)"
  install_node_modules
  npm run --silent build
fi

RUN="mr-demo-$$"
NODE="$RUN-node" FABRIC="$RUN-fabric" POD1="$RUN-pod1" POD2="$RUN-pod2"
CNI_PATH_DIRS="/usr/lib/cni:$PWD/dist"
WORK="" WATCHER=""

# The named network namespaces, names only. Not `ip netns list`: it asks the kernel for each one's
# id, and a namespace another process is creating at that moment (its file made, not yet mounted)
# makes it print "Error: Peer netns reference is invalid." on stderr.
netns_names() { ls -1 /run/netns 2>/dev/null || true; }

# Removes namespaces (killing what still runs in them: our own ptp, markroute, ping) and temp
# dirs. With a pid, only those of runs whose process is gone (mr-demo-<pid>-*, /tmp/mr-demo-<pid>.*).
remove_run() { # run-prefix work-dir
  local ns pid
  for ns in $(netns_names | awk -v p="$1-" 'index($1, p) == 1 {print $1}'); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  [ -z "$2" ] || rm -rf "$2"
}
sweep_dead_runs() {
  local pid
  for pid in $({ netns_names | sed -n 's/^mr-demo-\([0-9][0-9]*\)-.*/\1/p'
                 find /tmp -maxdepth 1 -name 'mr-demo-*' -printf '%f\n' | sed -n 's/^mr-demo-\([0-9][0-9]*\)\..*/\1/p'; } | sort -u); do
    kill -0 "$pid" 2>/dev/null && continue
    echo "removing what a killed demo (pid $pid) left behind"
    remove_run "mr-demo-$pid" ""
    find /tmp -maxdepth 1 -name "mr-demo-$pid.*" -exec rm -rf {} +
  done
}
cleanup() {
  local rc=$?
  trap - ERR EXIT INT TERM HUP
  set +e
  remove_run "$RUN" "$WORK"
  [ -z "$WATCHER" ] || kill "$WATCHER" 2>/dev/null
  left=$(netns_names | awk -v p="$RUN-" 'index($1, p) == 1 {print $1}')
  if [ -n "$left" ] || [ -e "$WORK" ]; then
    printf '%s: FAILED to remove %s\n' "$ME" "$left $WORK" >&2
    rc=1
  else
    echo "cleanup: namespaces $RUN-* and $WORK removed"
  fi
  exit "$rc"
}
trap cleanup EXIT
for sig in HUP:129 INT:130 TERM:143; do
  # shellcheck disable=SC2064 # expanded now, on purpose
  trap "echo \"$ME: stopped by SIG${sig%:*}\" >&2; exit ${sig#*:}" "${sig%:*}"
done

STEP="setting up"
sweep_dead_runs
WORK=$(mktemp -d "/tmp/$RUN.XXXXXX")
# A watcher in a session of its own (a kill of our process group does not reach it): if this script
# dies without cleaning up (SIGKILL), it removes the run's namespaces and temp dir.
setsid bash -c "$(declare -f netns_names remove_run)"'
  while kill -0 "$1" 2>/dev/null; do sleep 0.3; done
  remove_run "$2" "$3"' watcher $$ "$RUN" "$WORK" </dev/null >/dev/null 2>&1 &
WATCHER=$!

in_node() { ip netns exec "$NODE" "$@"; }
in_fabric() { ip netns exec "$FABRIC" "$@"; }

say "node, fabric and pod namespaces ($RUN-*)"
for ns in "$NODE" "$FABRIC" "$POD1" "$POD2"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$NODE" link add eth0 type veth peer name eth0 netns "$FABRIC"   # made in the node namespace, never in the root one
ip -n "$NODE" addr add 10.224.0.10/24 dev eth0; ip -n "$NODE" link set eth0 up
ip -n "$NODE" route add default via 10.224.0.1
ip -n "$FABRIC" addr add 10.224.0.1/24 dev eth0; ip -n "$FABRIC" link set eth0 up
ip -n "$FABRIC" route add 10.244.0.0/24 via 10.224.0.10          # hairpin pod traffic back to the node
in_node sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.default.rp_filter=1 net.ipv4.conf.eth0.rp_filter=1
in_fabric sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.eth0.rp_filter=0 \
  net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0
echo "node uplink eth0 10.224.0.10 -> fabric gateway 10.224.0.1 (rp_filter strict on the node)"

# The fabric's NSG: a counter of pod-to-pod packets, later a deny rule. nftables when it works in
# the fabric namespace, else iptables-legacy (what the iptables backend is for).
if in_fabric nft list tables >/dev/null 2>&1; then
  FABRIC_FW=nft
  in_fabric nft -f - <<'NFT'
table inet nsg {
  counter pod_to_pod {}
  chain forward {
    type filter hook forward priority 0; policy accept;
    ip saddr 10.244.0.0/24 ip daddr 10.244.0.0/24 counter name pod_to_pod
  }
}
NFT
else
  FABRIC_FW=iptables-legacy
  in_fabric iptables-legacy -N NSG
  in_fabric iptables-legacy -A FORWARD -j NSG
  in_fabric iptables-legacy -A NSG -s 10.244.0.0/24 -d 10.244.0.0/24 -j RETURN   # counts
fi
nsg_packets() {
  if [ "$FABRIC_FW" = nft ]; then in_fabric nft list counter inet nsg pod_to_pod | awk '$1 == "packets" {print $2}'
  else in_fabric iptables-legacy -L NSG -v -x -n | awk '$3 == "RETURN" {print $1}'; fi
}
nsg_deny() { # destination
  if [ "$FABRIC_FW" = nft ]; then in_fabric nft insert rule inet nsg forward ip daddr "$1" icmp type echo-request drop
  else in_fabric iptables-legacy -I NSG -d "$1" -p icmp --icmp-type echo-request -j DROP; fi
}
echo "fabric NSG: $FABRIC_FW, counts pod-to-pod packets it forwards"

# The backend: as asked, else what markroute's `auto` picks in the node namespace.
if [ -n "$REQUESTED" ]; then
  BACKEND=$REQUESTED WHY="as asked"
elif in_node nft list tables >/dev/null 2>&1; then
  BACKEND=nftables WHY="default: \`nft list tables\` works, as markroute's auto finds"
else
  BACKEND=iptables WHY="default: \`nft list tables\` fails, markroute's auto takes iptables"
fi
if [ "$BACKEND" = nftables ]; then
  in_node nft list tables >/dev/null || die "the nftables backend needs a working \`nft list tables\` (above)"
fi
say "backend: $BACKEND ($WHY)"

# Everything of markroute's kinds on the node, whichever backend made it; empty when nothing.
nft_tables() { in_node nft list tables 2>/dev/null | awk '$1 == "table" && $3 ~ /^markroute-/ {print $2 " " $3}' || true; }
iptables_objects() { # chains and jumps, every variant and family
  local v f
  for v in legacy nft; do for f in iptables ip6tables; do
    in_node "$f-$v-save" 2>/dev/null | grep -E '^:MARKROUTE-|-j MARKROUTE-' | sed "s/^/$f-$v: /" || true
  done; done
}
ipsets() { in_node ipset list -n 2>/dev/null | grep -E '^mr[46]-' || true; }
fwmark_rules() { { ip -n "$NODE" -4 rule; ip -n "$NODE" -6 rule; } | grep fwmark || true; }
policy_routes() { { ip -n "$NODE" -4 route show table all; ip -n "$NODE" -6 route show table all; } | grep -E ' table ' | grep -vE ' table (local|main|default)( |$)' || true; }

# The node's state that matters, to compare before and after: rules and chains (an empty built-in
# table that iptables-nft leaves behind is not state), ipsets, nft tables, policy rules, routes of
# every table, rp_filter.
node_state() {
  local v
  for v in legacy nft; do
    in_node "iptables-$v-save" | grep -E '^(-A|:)' | grep -vE '^:(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) ' || true
  done
  in_node ipset list
  nft_tables
  ip -n "$NODE" rule; ip -n "$NODE" -6 rule; ip -n "$NODE" -4 route show table all
  in_node sysctl net.ipv4.conf.eth0.rp_filter
}
before=$(node_state)

# A libcni-style chain: each plugin of the conflist in order for ADD, prevResult passed along.
conflist=$(node -e '
  const [work, backend] = process.argv.slice(1);
  const c = JSON.parse(require("fs").readFileSync("conflists/10-ptp-markroute.conflist", "utf8"));
  const [ptp, mr] = c.plugins;
  ptp.ipam.dataDir = work + "/ipam";
  Object.assign(mr, { stateDir: work + "/state", logFile: work + "/markroute.log" }, backend ? { backend } : {});
  console.log(JSON.stringify(c));' "$WORK" "$REQUESTED")
TABLE=$(node -e 'console.log(JSON.parse(process.argv[1]).plugins[1].table)' "$conflist")
plugin_conf() { # conflist-index [prevResult]
  node -e '
    const c = JSON.parse(process.argv[1]); const p = c.plugins[Number(process.argv[2])];
    const prev = process.argv[3] ? { prevResult: JSON.parse(process.argv[3]) } : {};
    console.log(JSON.stringify({ cniVersion: c.cniVersion, name: c.name, ...p, ...prev }));' "$conflist" "$1" "${2:-}"
}
cni() { # command plugin-binary container-id netns stdin; a plugin's error (JSON on stdout) is shown
  local out rc=0
  out=$(echo "$5" | in_node env CNI_COMMAND="$1" CNI_CONTAINERID="$3" CNI_NETNS="$4" CNI_IFNAME=eth0 \
    CNI_PATH="$CNI_PATH_DIRS" CNI_ARGS="K8S_POD_NAMESPACE=demo;K8S_POD_NAME=$3;IgnoreUnknown=1" "$2") || rc=$?
  [ "$rc" = 0 ] || die "$1 $3: $2 exited $rc: $out"
  printf '%s\n' "$out"
}
declare -A RESULT
for pod in pod1 pod2; do
  say "ADD $pod: ptp, then markroute"
  conf=$(plugin_conf 0)
  r=$(cni ADD /usr/lib/cni/ptp "$pod" "/run/netns/$RUN-$pod" "$conf")
  conf=$(plugin_conf 1 "$r")
  RESULT[$pod]=$(cni ADD dist/markroute "$pod" "/run/netns/$RUN-$pod" "$conf")
  echo "${RESULT[$pod]}"
done
ip2=$(ip -n "$POD2" -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
[ -n "$ip2" ] || die "pod2 has no IPv4 address on eth0"

say "what markroute installed in the node namespace ($BACKEND backend)"
tables=$(nft_tables) chains=$(iptables_objects) sets=$(ipsets)
if [ "$BACKEND" = nftables ]; then
  [ -n "$tables" ] || die "no nftables table markroute-* in the node namespace"
  [ -z "$chains$sets" ] || die "the nftables backend left iptables objects: $chains $sets"
  while read -r family name; do
    echo "# nft list table $family $name"
    in_node nft list table "$family" "$name"
  done <<<"$tables"
else
  [ -n "$chains" ] || die "no MARKROUTE- chain in any iptables variant of the node namespace"
  [ -n "$sets" ] || die "no mr4-/mr6- ipset in the node namespace"
  [ -z "$tables" ] || die "the iptables backend made nftables tables: $tables"
  variant=$(sed -n '1s/^ip6*tables-\([a-z]*\):.*/\1/p' <<<"$chains")
  echo "# iptables-$variant-save -t mangle (markroute's chain and the jump to it)"
  in_node "iptables-$variant-save" -t mangle | grep -E 'MARKROUTE-' || die "iptables-$variant-save shows no MARKROUTE- rule"
  for s in $sets; do
    echo "# ipset list $s (members)"
    in_node ipset list "$s" | sed -n '/^Members:/,$p' | tail -n +2
  done
fi
rules=$(fwmark_rules)
[ -n "$rules" ] || die "no fwmark ip rule in the node namespace"
echo "# ip rule (fwmark)"; echo "$rules"
routes=$(ip -n "$NODE" route show table "$TABLE")
[ -n "$routes" ] || die "policy table $TABLE is empty"
echo "# ip route show table $TABLE"; echo "$routes"
rp=$(in_node cat /proc/sys/net/ipv4/conf/eth0/rp_filter)
echo "uplink rp_filter: $rp (2 = loose)"

say "pod1 -> pod2 ($ip2): the packets go out to the fabric and back"
n0=$(nsg_packets)
out=$(ip netns exec "$POD1" ping -c 3 -i 0.2 -W 1 "$ip2" 2>&1) || die "pod1 cannot reach pod2: $out"
tail -2 <<<"$out"
n1=$(nsg_packets)
echo "fabric NSG counted $((n1 - n0)) pod-to-pod packets (3 requests, 3 replies)"
[ $((n1 - n0)) -ge 6 ] || die "the fabric saw $((n1 - n0)) pod-to-pod packets, not the 6 of 3 pings: traffic did not cross it"

say "the fabric's NSG denies pod1 -> pod2"
nsg_deny "$ip2"
if ip netns exec "$POD1" ping -c 1 -W 1 "$ip2" >/dev/null 2>&1; then die "ping went through despite the fabric's deny rule"; fi
echo "ping blocked at the fabric, as the NSG says"

say "DEL both pods (markroute, then ptp)"
for pod in pod2 pod1; do
  conf=$(plugin_conf 1 "${RESULT[$pod]}")
  cni DEL dist/markroute "$pod" "/run/netns/$RUN-$pod" "$conf"
  conf=$(plugin_conf 0 "${RESULT[$pod]}")
  cni DEL /usr/lib/cni/ptp "$pod" "/run/netns/$RUN-$pod" "$conf"
  echo "$pod deleted"
done

say "teardown check: no markroute object of either backend left, the node as before"
failed=0
check_gone() { # what found
  if [ -z "$2" ]; then ok "$1: none"; else printf '%s: FAILED: %s left:\n%s\n' "$ME" "$1" "$2" >&2; failed=1; fi
}
# (each reader prints what it finds and cannot fail: a command substitution's status is lost in an argument)
table_routes() { { ip -n "$NODE" -4 route show table "$TABLE"; ip -n "$NODE" -6 route show table "$TABLE"; } 2>/dev/null || true; }
check_gone "nftables tables markroute-*" "$(nft_tables)"
check_gone "iptables chains MARKROUTE-* and jumps to them (legacy, nft; IPv4, IPv6)" "$(iptables_objects)"
check_gone "ipsets mr4-*/mr6-*" "$(ipsets)"
check_gone "ip rules with fwmark (IPv4, IPv6)" "$(fwmark_rules)"
check_gone "routes in table $TABLE (IPv4, IPv6)" "$(table_routes)"
check_gone "routes in other policy tables" "$(policy_routes)"
after=$(node_state)
if [ "$before" = "$after" ]; then
  ok "iptables, ipsets, nft tables, ip rules, routes and rp_filter are as before the pods"
else
  echo "$ME: FAILED: the node differs from before the pods (< before, > after):" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  failed=1
fi
[ "$failed" = 0 ] || die "the node is not clean after DEL"

STEP="done"
printf '\n%sdemo OK (%s backend)%s\n' "$GREEN" "$BACKEND" "$OFF"
