// kube-proxy (iptables mode) in miniature: ClusterIP DNAT in nat PREROUTING and
// OUTPUT, with the 0x4000 masquerade mark for hairpin (pod -> its own service), in
// either iptables variant. Like kube-proxy it rewrites all its chains on each sync
// (iptables-restore --noflush), so other owners' rules are left alone.
import { isIPv6 } from 'node:net';
import { nsExec } from './exec.ts';

export type IptablesVariant = 'legacy' | 'nft';

export interface ClusterIPSpec {
  ip: string;
  port: number;
  proto?: 'udp' | 'tcp';
  backend: { ip: string; port: number };
  iptables?: IptablesVariant;
}

interface Svc extends Required<Omit<ClusterIPSpec, 'iptables'>> {
  id: number;
}

export class KubeProxy {
  private services = new Map<string, Svc[]>(); // by variant+family
  private hooked = new Set<string>();
  private nextId = 1;

  constructor(readonly ns: string) {}

  add(spec: ClusterIPSpec): { remove(): void } {
    const variant = spec.iptables ?? 'legacy';
    const key = `${variant}${isIPv6(spec.ip) ? '6' : '4'}`;
    const svc: Svc = { id: this.nextId++, ip: spec.ip, port: spec.port, proto: spec.proto ?? 'udp', backend: spec.backend };
    const list = this.services.get(key) ?? [];
    this.services.set(key, [...list, svc]);
    this.sync(key, []);
    let removed = false;
    return {
      remove: () => {
        if (removed) return;
        removed = true;
        this.services.set(key, (this.services.get(key) ?? []).filter((s) => s !== svc));
        this.sync(key, [svc.id]);
      },
    };
  }

  private sync(key: string, deleted: number[]): void {
    const v6 = key.endsWith('6');
    const variant = key.slice(0, -1) as IptablesVariant;
    const host = v6 ? '/128' : '/32';
    const svcs = this.services.get(key) ?? [];
    const l: string[] = ['*nat'];
    // Declaring a chain with --noflush flushes it: that is how kube-proxy resyncs.
    for (const c of ['KUBE-SERVICES', 'KUBE-MARK-MASQ', 'KUBE-POSTROUTING']) l.push(`:${c} - [0:0]`);
    for (const s of svcs) l.push(`:KUBE-SVC-${s.id} - [0:0]`, `:KUBE-SEP-${s.id} - [0:0]`);
    if (!this.hooked.has(key)) {
      l.push('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES');
      l.push('-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES');
      l.push('-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING');
    }
    l.push('-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000');
    l.push('-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN');
    l.push('-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000');
    l.push('-A KUBE-POSTROUTING -j MASQUERADE');
    for (const s of svcs) {
      const to = v6 ? `[${s.backend.ip}]:${s.backend.port}` : `${s.backend.ip}:${s.backend.port}`;
      l.push(`-A KUBE-SERVICES -d ${s.ip}${host} -p ${s.proto} -m ${s.proto} --dport ${s.port} -j KUBE-SVC-${s.id}`);
      l.push(`-A KUBE-SVC-${s.id} -j KUBE-SEP-${s.id}`);
      l.push(`-A KUBE-SEP-${s.id} -s ${s.backend.ip}${host} -j KUBE-MARK-MASQ`);
      l.push(`-A KUBE-SEP-${s.id} -p ${s.proto} -m ${s.proto} -j DNAT --to-destination ${to}`);
    }
    // Removed services: flush (declare) then delete their chains, after KUBE-SERVICES no longer jumps there.
    for (const id of deleted) l.splice(1, 0, `:KUBE-SVC-${id} - [0:0]`, `:KUBE-SEP-${id} - [0:0]`);
    for (const id of deleted) l.push(`-X KUBE-SVC-${id}`, `-X KUBE-SEP-${id}`);
    l.push('COMMIT', '');
    const bin = `${v6 ? 'ip6tables' : 'iptables'}-${variant}-restore`;
    nsExec(this.ns, [bin, '--noflush', '--wait'], { input: l.join('\n') });
    this.hooked.add(key);
  }
}
