// A small CRI v1 client (runtime.v1.RuntimeService over a unix socket), for driving containerd's CRI
// plugin the way kubelet does: RunPodSandbox, StopPodSandbox, RemovePodSandbox and the status calls
// (Status too: with verbose, containerd's CRI says which CNI configuration it has loaded).
// Only the messages of runtime.proto (a subset of k8s.io/cri-api's api.proto) are known.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const PROTO = join(dirname(fileURLToPath(import.meta.url)), 'runtime.proto');

export interface PodSandboxMetadata {
  name: string;
  uid: string;
  namespace: string;
  attempt?: number;
}

export interface PodSandboxConfig {
  metadata: PodSandboxMetadata;
  hostname?: string;
  logDirectory?: string;
  dnsConfig?: { servers?: string[]; searches?: string[]; options?: string[] };
  portMappings?: { protocol?: 'TCP' | 'UDP' | 'SCTP'; containerPort?: number; hostPort?: number; hostIp?: string }[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: {
    cgroupParent?: string;
    securityContext?: { namespaceOptions?: { network?: NamespaceMode; pid?: NamespaceMode; ipc?: NamespaceMode }; privileged?: boolean };
    sysctls?: Record<string, string>;
  };
}

export type NamespaceMode = 'POD' | 'CONTAINER' | 'NODE' | 'TARGET';
export type PodSandboxState = 'SANDBOX_READY' | 'SANDBOX_NOTREADY';

export interface VersionResponse {
  version: string;
  runtimeName: string;
  runtimeVersion: string;
  runtimeApiVersion: string;
}

export interface PodSandbox {
  id: string;
  metadata: PodSandboxMetadata;
  state: PodSandboxState;
  createdAt: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  runtimeHandler: string;
}

export interface PodSandboxStatus extends PodSandbox {
  network: { ip: string; additionalIps: { ip: string }[] } | null;
}

export interface PodSandboxStatusResponse {
  status: PodSandboxStatus;
  /** With verbose: runtime-specific JSON by key (containerd: "info"). */
  info: Record<string, string>;
}

export interface RuntimeCondition {
  type: string;
  status: boolean;
  reason: string;
  message: string;
}

export interface StatusResponse {
  status: { conditions: RuntimeCondition[] };
  /** With verbose: runtime-specific JSON by key (containerd: "cniconfig", the CNI configuration it has loaded; "lastCNILoadStatus"). */
  info: Record<string, string>;
}

/** A failed CRI call: the gRPC status code and the runtime's message. */
export class CriError extends Error {
  constructor(
    readonly method: string,
    readonly code: grpc.status,
    readonly details: string,
  ) {
    super(`CRI ${method}: ${grpc.status[code] ?? code}: ${details}`);
  }
}

type Unary = (req: object, meta: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: any) => void) => void;

let service: grpc.ServiceClientConstructor | undefined;

function runtimeService(): grpc.ServiceClientConstructor {
  if (!service) {
    const def = protoLoader.loadSync(PROTO, { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true });
    const pkg = grpc.loadPackageDefinition(def) as any;
    service = pkg.runtime.v1.RuntimeService as grpc.ServiceClientConstructor;
  }
  return service;
}

export class CriClient {
  private readonly client: grpc.Client;

  /** `socket`: the runtime's unix socket path (containerd's [grpc] address). */
  constructor(
    readonly socket: string,
    private readonly timeoutMs = 60_000,
  ) {
    const Ctor = runtimeService();
    this.client = new Ctor(`unix:${socket}`, grpc.credentials.createInsecure());
  }

  private call<T>(method: string, req: object, timeoutMs = this.timeoutMs): Promise<T> {
    const fn = (this.client as unknown as Record<string, Unary>)[method]!.bind(this.client);
    return new Promise((resolve, reject) => {
      fn(req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(new CriError(method, err.code, err.details || err.message));
        else resolve(res as T);
      });
    });
  }

  version(): Promise<VersionResponse> {
    return this.call('Version', { version: 'v1' });
  }

  /** Creates and starts a sandbox (the pause container and its network); resolves to its id. */
  async runPodSandbox(config: PodSandboxConfig, runtimeHandler = ''): Promise<string> {
    const res = await this.call<{ podSandboxId: string }>('RunPodSandbox', { config, runtimeHandler });
    return res.podSandboxId;
  }

  async stopPodSandbox(id: string): Promise<void> {
    await this.call('StopPodSandbox', { podSandboxId: id });
  }

  async removePodSandbox(id: string): Promise<void> {
    await this.call('RemovePodSandbox', { podSandboxId: id });
  }

  podSandboxStatus(id: string, verbose = false): Promise<PodSandboxStatusResponse> {
    return this.call('PodSandboxStatus', { podSandboxId: id, verbose });
  }

  async listPodSandbox(filter?: { id?: string; state?: PodSandboxState; labelSelector?: Record<string, string> }): Promise<PodSandbox[]> {
    const req = filter ? { filter: { ...filter, state: filter.state ? { state: filter.state } : undefined } } : {};
    const res = await this.call<{ items: PodSandbox[] }>('ListPodSandbox', req);
    return res.items;
  }

  /** The runtime's conditions (RuntimeReady, NetworkReady), and with verbose its own details. */
  status(verbose = false): Promise<StatusResponse> {
    return this.call('Status', { verbose });
  }

  /** Resolves once the socket answers Version, or rejects after timeoutMs. */
  async waitReady(timeoutMs = 20_000): Promise<VersionResponse> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await this.call<VersionResponse>('Version', { version: 'v1' }, 2_000);
      } catch (e) {
        if (Date.now() > until) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  close(): void {
    this.client.close();
  }
}
