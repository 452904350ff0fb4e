// The ADD results of the "main" CNI plugins markroute may be chained after, reshaped from a real
// ptp result: four plugins as their current sources print them, plus shape variants clusters still
// run (Calico v3.30.x, AWS VPC CNI's branch-ENI pods). The shapes (keys, omissions, interface roles,
// ips[].interface, order) are read from each plugin's source; test/fixtures/main-plugins/ holds them
// with the commit, path and function they come from. Pure functions: no I/O, nothing run.
//
// Every plugin prints its result with cnitypes.PrintResult(result, conf.CNIVersion), i.e. in the
// conflist's cniVersion, so the reshaped result keeps the ptp result's cniVersion and applies what
// containernetworking/cni v1.3.0 does on printing (pkg/types/100/types.go convertTo04x, Result.MarshalJSON):
// below 1.0.0 every ips entry gets "version", interfaces lose "mtu", and "dns" is always printed
// ({} when empty: types040.Result has no MarshalJSON); from 1.0.0 an empty "dns" is left out.
import { createHash } from 'node:crypto';

/**
 * A main plugin, or one of its shape variants: 'calico-3.30' is Calico before v3.31 (one interface,
 * the host veth), 'aws-vpc-cni-branch' an AWS VPC CNI pod with security groups for pods (branch ENI).
 * No Cilium variant: every supported Cilium (and every datapath mode) lists the host side; the
 * container-only result of Cilium before v1.14 is in test/fixtures/main-plugins/README.md.
 */
export type MainPlugin = 'azure-vnet' | 'calico' | 'cilium' | 'aws-vpc-cni' | 'calico-3.30' | 'aws-vpc-cni-branch';
export const MAIN_PLUGINS: MainPlugin[] = ['azure-vnet', 'calico', 'cilium', 'aws-vpc-cni', 'calico-3.30', 'aws-vpc-cni-branch'];

export interface PodIdentity {
  namespace: string;
  name: string;
  containerId: string;
}

const sha1Hex = (s: string): string => createHash('sha1').update(s).digest('hex');
const sha256Hex = (s: string): string => createHash('sha256').update(s).digest('hex');

/** The host veth name this plugin would give the pod (≤15 chars), computed as its source does (cite), e.g. from namespace/name or container id. */
export function hostVethName(plugin: MainPlugin, pod: PodIdentity): string {
  switch (plugin) {
    case 'azure-vnet':
      // Azure/azure-container-networking network/endpoint_linux.go generateVethName + newEndpointImpl:
      // "azv" + sha1(key)[:11]; cni/network/network.go createEpInfo: key = "<namespace>.<pod>" in
      // transparent mode (the default of cni/azure-linux*.conflist); other modes key on
      // networkID + containerID + ifName (not modelled here).
      return 'azv' + sha1Hex(`${pod.namespace}.${pod.name}`).slice(0, 11);
    case 'calico':
    case 'calico-3.30':
      // projectcalico/calico libcalico-go/lib/backend/k8s/conversion/workload_endpoint_default.go
      // VethNameForWorkload: "cali" (FELIX_INTERFACEPREFIX's first entry) + sha1("<namespace>.<pod>")[:11];
      // the same function in v3.30.x (k8s.go CmdAddK8s: desiredVethName).
      return 'cali' + sha1Hex(`${pod.namespace}.${pod.name}`).slice(0, 11);
    case 'cilium':
      // cilium/cilium plugins/cilium-cni/cmd/cmd.go Add: cniID = ContainerID + ":" + ContainerInterfaceName
      // (endpoint.go PrepareEndpoint: CNI_CONTAINERID, CNI_IFNAME, here "eth0"); pkg/datapath/connector
      // Endpoint2IfName: "lxc" + sha256(cniID) hex truncated to IFNAMSIZ(16) - len("tmp") - 1 = 12.
      return 'lxc' + sha256Hex(`${pod.containerId}:eth0`).slice(0, 12);
    case 'aws-vpc-cni':
      // aws/amazon-vpc-cni-k8s pkg/networkutils/names.go GeneratePodHostVethName(prefix, ns, name, 0):
      // prefix (AWS_VPC_K8S_CNI_VETHPREFIX, default "eni", cmd/aws-vpc-cni/main.go) + sha1("<namespace>.<pod>")[:11].
      return 'eni' + sha1Hex(`${pod.namespace}.${pod.name}`).slice(0, 11);
    case 'aws-vpc-cni-branch':
      // aws/amazon-vpc-cni-k8s cmd/routed-eni-cni-plugin/cni.go add, r.PodVlanId != 0:
      // GeneratePodHostVethName(sgpp.BuildHostVethNamePrefix(VethPrefix, PodSGEnforcingMode), ns, name, 0);
      // pkg/sgpp/utils.go: "vlan" in strict mode, the default (pkg/sgpp/constants.go DefaultEnforcingMode;
      // POD_SECURITY_GROUP_ENFORCING_MODE=standard gives the regular prefix, "eni").
      return 'vlan' + sha1Hex(`${pod.namespace}.${pod.name}`).slice(0, 11);
  }
}

// --- reading a ptp result ---------------------------------------------------------------------

interface PtpIface {
  name: string;
  mac?: string;
  sandbox?: string;
}
interface PtpIp {
  version?: string;
  interface?: number;
  address: string;
  gateway?: string;
}

const isV6 = (address: string): boolean => address.includes(':');
const ipOf = (cidr: string): string => cidr.split('/')[0]!;
const hostPrefix = (cidr: string): string => `${ipOf(cidr)}/${isV6(cidr) ? 128 : 32}`;
const defaultDst = (v6: boolean): string => (v6 ? '::/0' : '0.0.0.0/0');

/** cniVersion below 1.0.0: the types040 printing rules apply. */
const isLegacy = (version: string): boolean => /^0\./.test(version);

function readPtp(ptp: any, ifName: string) {
  const interfaces = (ptp.interfaces ?? []) as PtpIface[];
  const host = interfaces.find((i) => !i.sandbox && i.name !== ifName);
  const container = interfaces.find((i) => i.sandbox && i.name === ifName) ?? interfaces.find((i) => i.name === ifName);
  if (!host || !container) throw new Error(`not a ptp result: want a host veth and ${ifName} with a sandbox`);
  return { version: String(ptp.cniVersion), host, container, ips: (ptp.ips ?? []) as PtpIp[] };
}

/** One ips entry as types040/types100 print it: version (below 1.0.0), interface, address, gateway. */
function ipEntry(version: string, address: string, opts: { iface?: number; gateway?: string }): Record<string, unknown> {
  return {
    ...(isLegacy(version) ? { version: isV6(address) ? '6' : '4' } : {}),
    ...(opts.iface !== undefined ? { interface: opts.iface } : {}),
    address,
    ...(opts.gateway !== undefined ? { gateway: opts.gateway } : {}),
  };
}

/** Result keys in the order Go prints them; dns is {} below 1.0.0 and left out from 1.0.0 when empty (none of these plugins sets DNS). */
function result(version: string, parts: { interfaces: unknown[]; ips: unknown[]; routes?: unknown[] }): Record<string, unknown> {
  return {
    cniVersion: version,
    interfaces: parts.interfaces,
    ips: parts.ips,
    ...(parts.routes && parts.routes.length ? { routes: parts.routes } : {}),
    ...(isLegacy(version) ? { dns: {} } : {}),
  };
}

/**
 * AWS VPC CNI's `dummy…` entry, named like the host veth with prefix "dummy" (same suffix; never
 * created in the kernel), for a pod of one address: ipamd assigns IPv4 or IPv6, not both.
 */
function awsDummy(addresses: number, hostIf: string): string {
  if (addresses !== 1) throw new Error(`aws-vpc-cni gives a pod one address, not ${addresses}`);
  return 'dummy' + hostIf.slice(-11);
}

/** A real ptp ADD result (interfaces [hostVeth, eth0 with sandbox], ips with interface: 1) reshaped exactly as `plugin` shapes its own result: same keys, same omissions, `hostIf` used as the host-side name where the plugin lists it. */
export function reshapeResult(plugin: MainPlugin, ptpResult: any, opts: { hostIf: string; ifName: string; netns: string; mtu?: number; vlanId?: number }): any {
  const { version, host, container, ips } = readPtp(ptpResult, opts.ifName);
  switch (plugin) {
    case 'azure-vnet': {
      // Azure/azure-container-networking cni/network/network.go convertInterfaceInfoToCniResult: one
      // interface {Name: ifName, Mac: info.MacAddress} — no sandbox, no host veth; the InfraNIC info
      // built by cni/network/invoker_cns.go configureDefaultAddResult never sets MacAddress, so "mac"
      // is empty and left out. ips {Address, Gateway} without interface; one default route per IP via
      // its gateway (configureDefaultAddResult when CNS gives no routes). Gateways kept from ptp
      // (azure-vnet: 169.254.1.1 / fe80::1234:5678:9abc in overlay mode).
      return result(version, {
        interfaces: [{ name: opts.ifName }],
        ips: ips.map((ip) => ipEntry(version, ip.address, { gateway: ip.gateway })),
        routes: ips.map((ip) => ({ dst: defaultDst(isV6(ip.address)), ...(ip.gateway ? { gw: ip.gateway } : {}) })),
      });
    }
    case 'calico': {
      // projectcalico/calico cni-plugin/pkg/k8s/k8s.go CmdAddK8s (since v3.31, #10382): interfaces
      // [{Name: hostVeth}, {Name: ifName, Mac, Mtu: conf.MTU, Sandbox: netns}], every ip Interface = 1.
      // cni-plugin/pkg/plugin/plugin.go cmdAdd sets every Gateway to nil; dataplane_linux.go
      // DoWorkloadNetnsSetUp rewrites the masks to /32 and /128. calico-ipam (ipam_plugin.go cmdAdd,
      // since v3.32) adds one route per IP, dst = the address with the IPAM block's mask (here: ptp's).
      const contIface = {
        name: opts.ifName,
        ...(container.mac ? { mac: container.mac } : {}),
        ...(isLegacy(version) ? {} : { mtu: opts.mtu ?? 1500 }),
        sandbox: opts.netns,
      };
      return result(version, {
        interfaces: [{ name: opts.hostIf }, contIface],
        ips: ips.map((ip) => ipEntry(version, hostPrefix(ip.address), { iface: 1 })),
        routes: ips.map((ip) => ({ dst: ip.address })),
      });
    }
    case 'cilium': {
      // cilium/cilium plugins/cilium-cni/cmd/cmd.go Add: interfaces [{Name: lxc…, Mac: host mac}
      // (netkit L3: no mac), {Name: ifName, Mac, Sandbox: netns}]; ipConfig.Interface =
      // len(res.Interfaces) = 1; IPv6 is prepared before IPv4. prepareIP: address /32 or /128
      // (AddrToIPNet), Gateway = the node's router IP, routes [{router/32}, {default via router}]
      // (pkg/datapath/connector/ipam.go IPv4Routes/IPv6Routes, newCNIRoute keeps only dst and gw).
      const ordered = [...ips.filter((ip) => isV6(ip.address)), ...ips.filter((ip) => !isV6(ip.address))];
      return result(version, {
        interfaces: [
          { name: opts.hostIf, ...(host.mac ? { mac: host.mac } : {}) },
          { name: opts.ifName, ...(container.mac ? { mac: container.mac } : {}), sandbox: opts.netns },
        ],
        ips: ordered.map((ip) => ipEntry(version, hostPrefix(ip.address), { iface: 1, gateway: ip.gateway })),
        routes: ordered.flatMap((ip) => (ip.gateway ? [{ dst: hostPrefix(ip.gateway) }, { dst: defaultDst(isV6(ip.address)), gw: ip.gateway }] : [])),
      });
    }
    case 'aws-vpc-cni': {
      // aws/amazon-vpc-cni-k8s cmd/routed-eni-cni-plugin/cni.go add: interfaces [{Name: hostVeth},
      // {Name: ifName, Sandbox: netns, Mac: fmt.Sprint(RouteTableId)} (254 = main, primary ENI),
      // {Name: "dummy"+suffix, Mac: "0", Sandbox: fmt.Sprint(DeviceNumber)}] for a non-branch-ENI pod;
      // ips {Interface: 1, Address /32 or /128, Gateway: PodENISubnetGW = "" → left out}; no routes.
      // One family only (ipamd assigns IPv4 or IPv6): a dual-stack ptp result is not reshaped.
      const dummy = awsDummy(ips.length, opts.hostIf);
      return result(version, {
        interfaces: [
          { name: opts.hostIf },
          { name: opts.ifName, mac: '254', sandbox: opts.netns },
          { name: dummy, mac: '0', sandbox: '0' },
        ],
        ips: ips.map((ip) => ipEntry(version, hostPrefix(ip.address), { iface: 1 })),
      });
    }
    case 'calico-3.30': {
      // projectcalico/calico v3.30.x cni-plugin/pkg/k8s/k8s.go CmdAddK8s: one interface
      // {Name: endpoint.Spec.InterfaceName} = the host veth cali… — no mac, no mtu, no sandbox, no
      // container entry — and ips[].interface never set. Gateways set to nil by plugin.go cmdAdd, masks
      // /32 and /128 (dataplane_linux.go DoWorkloadNetnsSetUp), no routes from calico-ipam before v3.32.
      return result(version, {
        interfaces: [{ name: opts.hostIf }],
        ips: ips.map((ip) => ipEntry(version, hostPrefix(ip.address), {})),
      });
    }
    case 'aws-vpc-cni-branch': {
      // aws/amazon-vpc-cni-k8s cmd/routed-eni-cni-plugin/cni.go add with r.PodVlanId != 0 (branch ENI):
      // [{Name: hostVeth (vlan…)}, {Name: ifName, Sandbox: netns, Mac: fmt.Sprint(RouteTableId)}, where
      // ipamd (pkg/ipamd/rpc_handler.go AddNetwork) gives a branch-ENI pod DeviceNumber -1 and
      // RouteTableId 0, so "0"; then {Name: "dummy"+suffix, Mac: fmt.Sprint(PodVlanId)} with NO sandbox.
      // ips {Interface: 1, Address /32 or /128, Gateway: PodENISubnetGW}: the branch ENI subnet's first
      // address (GetIPv4Gateway; ptp's gateway stands in), IPv6 fe80:ec2::1 (GetIPv6Gateway). No routes.
      const dummy = awsDummy(ips.length, opts.hostIf);
      return result(version, {
        interfaces: [
          { name: opts.hostIf },
          { name: opts.ifName, mac: '0', sandbox: opts.netns },
          { name: dummy, mac: String(opts.vlanId ?? 7) },
        ],
        ips: ips.map((ip) => ipEntry(version, hostPrefix(ip.address), { iface: 1, gateway: isV6(ip.address) ? 'fe80:ec2::1' : ip.gateway })),
      });
    }
  }
}
