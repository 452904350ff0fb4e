// The reference-counting engine over an in-memory store and a fake kernel that keeps the
// installed objects in a map (knftables' fake.go idea): what is installed is asserted directly.
import { describe, expect, it } from "vitest";
import { Session, type Kernel } from "../../src/engine.ts";
import type { Removal } from "../../src/backend/apply.ts";
import { parseConfig } from "../../src/config.ts";
import { objectKey, planAttachment, type HostMatch, type KernelObject, type NodeFacts } from "../../src/plan.ts";
import { MemoryStore, emptyIndex, type StateIndex } from "../../src/state/store.ts";

class FakeKernel implements Kernel {
  readonly installed = new Map<string, KernelObject>();
  rpFilter = 1;
  /** How many of the next apply calls throw, as a kernel tool refusing a change would. */
  failingApplies = 0;

  valuesBefore(objects: KernelObject[]): Map<string, number> {
    return new Map(objects.filter((o) => o.kind === "rpFilter").map((o) => [objectKey(o), this.rpFilter]));
  }

  apply(install: KernelObject[], remove: Removal[]): void {
    if (this.failingApplies > 0) {
      this.failingApplies--;
      throw new Error("simulated kernel refusal");
    }
    for (const o of install) {
      if (o.kind === "rpFilter") this.rpFilter = o.value;
      this.installed.set(objectKey(o), o);
    }
    for (const { object, previous: before } of remove) {
      if (object.kind === "rpFilter" && before !== undefined) this.rpFilter = before;
      this.installed.delete(objectKey(object));
    }
  }

  /** How many times the engine read objects back. */
  driftReads = 0;

  /** The next read-backs throw, as a kernel tool that cannot list would. */
  failingDrifts = 0;

  drift(objects: KernelObject[]): Map<string, string[]> {
    this.driftReads++;
    if (this.failingDrifts > 0) {
      this.failingDrifts--;
      throw new Error("simulated read failure");
    }
    return new Map(objects.map((o) => [objectKey(o), this.installed.has(objectKey(o)) ? [] : [`${objectKey(o)} is missing`]]));
  }

  kinds(): string[] {
    return [...this.installed.values()].map((o) => o.kind).sort();
  }
}

/** An ADD's drift check every time (driftCheckSeconds 0). */
const EVERY_ADD = 0;

const facts: NodeFacts = { backend: "iptables", iptablesVariant: "nft", uplinks: { 4: { dev: "eth0", gateway: "10.224.0.1" } } };

function planFor(pod: number, overrides: Record<string, unknown> = {}) {
  const config = parseConfig({
    cniVersion: "1.0.0", name: "net", type: "markroute", serviceCIDRs: ["10.96.0.0/12"], ...overrides,
    prevResult: {
      interfaces: [{ name: `veth${pod}` }, { name: "eth0", sandbox: `/run/netns/p${pod}` }],
      ips: [{ address: `10.244.0.${pod}/24`, interface: 1 }],
    },
  });
  const hostMatch: HostMatch = { iface: `veth${pod}`, topology: "routed", addresses: [{ family: 4, address: `10.244.0.${pod}` }] };
  return planAttachment(config, { network: "net", containerId: `c${pod}`, ifName: "eth0" }, hostMatch, facts, (config).marks[0]!);
}

function fixture() {
  const store = new MemoryStore();
  const kernel = new FakeKernel();
  let index: StateIndex = emptyIndex("boot/ns");
  // Each operation is a new process: it starts from what the store holds.
  const tx = () => {
    index = store.readIndex() ?? emptyIndex("boot/ns");
    return new Session(store, kernel, index, 0, false);
  };
  return { store, kernel, tx };
}

describe("engine: reference counting", () => {
  it("installs shared objects with the first pod and removes them with the last", () => {
    const { kernel, tx, store } = fixture();
    tx().attach(planFor(2), EVERY_ADD);
    expect(kernel.kinds()).toEqual(["element", "ipset", "markChain", "route", "rpFilter", "rule"]);

    tx().attach(planFor(3), EVERY_ADD);
    expect(kernel.kinds().filter((k) => k === "element")).toHaveLength(2);
    expect(kernel.kinds().filter((k) => k === "rule")).toHaveLength(1);

    expect(tx().detach(planFor(2).id)).toBe(true);
    expect(kernel.kinds()).toEqual(["element", "ipset", "markChain", "route", "rpFilter", "rule"]);
    expect(kernel.installed.has(`element/${setOf(planFor(2))}/10.244.0.2,veth2`)).toBe(false);
    expect(kernel.installed.has(`element/${setOf(planFor(3))}/10.244.0.3,veth3`)).toBe(true);

    expect(tx().detach(planFor(3).id)).toBe(true);
    expect(kernel.installed.size).toBe(0);
    expect(store.listRecords()).toEqual([]);
    expect(store.readIndex()).toMatchObject({ dirty: false, objects: {}, refs: {} });
  });

  it("second pod's ADD installs its element and re-writes only what costs nothing (rp_filter)", () => {
    const { tx } = fixture();
    tx().attach(planFor(2), EVERY_ADD);
    const second = tx();
    second.attach(planFor(3), EVERY_ADD);
    expect(second.summary.installed).toEqual([`element/${setOf(planFor(3))}/10.244.0.3,veth3`, "rpFilter/eth0"]);
  });

  it("DEL of an unknown attachment is a no-op that succeeds", () => {
    const { kernel, tx } = fixture();
    tx().attach(planFor(2), EVERY_ADD);
    expect(tx().detach("net_nope_eth0")).toBe(false);
    expect(kernel.installed.size).toBe(6);
  });

  it("re-ADD of the same attachment keeps one holder and no duplicate", () => {
    const { store, tx } = fixture();
    tx().attach(planFor(2), EVERY_ADD);
    tx().attach(planFor(2), EVERY_ADD);
    // every object counted once: one attachment holds each
    expect(Object.values(store.readIndex()!.refs)).toEqual(Array(planFor(2).objects.length).fill(1));
    tx().detach(planFor(2).id);
    expect(store.readIndex()!.objects).toEqual({});
  });

  it("DEL removes what ADD recorded even after the conflist changed", () => {
    const { kernel, tx } = fixture();
    tx().attach(planFor(2, { table: 100 }), EVERY_ADD);
    tx().attach(planFor(3, { table: 200 }), EVERY_ADD); // a new pod under a changed conflist: its own rule and route
    expect([...kernel.installed.keys()].filter((k) => k.startsWith("route/"))).toEqual(["route/4/100", "route/4/200"]);
    tx().detach(planFor(2).id);
    expect([...kernel.installed.keys()].filter((k) => k.startsWith("rule/"))).toEqual(["rule/4/32765/16/16/200"]);
    tx().detach(planFor(3).id);
    expect(kernel.installed.size).toBe(0);
  });

  it("a shared object planned differently by a departed pod reverts to the remaining pods' plan", () => {
    const { kernel, tx, store } = fixture();
    const chainKey = "markChain/4/nft/" + chainOf(planFor(2));
    tx().attach(planFor(2, { serviceCIDRs: ["10.96.0.0/12"] }), EVERY_ADD);
    tx().attach(planFor(3, { serviceCIDRs: ["10.0.0.0/16"] }), EVERY_ADD); // the conflist changed: newest plan wins
    expect(exemptOf(kernel.installed.get(chainKey))).toEqual(["10.0.0.0/16"]);
    expect(store.readIndex()!.objects[chainKey]!.mixed).toBe(true);
    tx().detach(planFor(3).id);
    expect(exemptOf(kernel.installed.get(chainKey))).toEqual(["10.96.0.0/12"]);
    expect(store.readIndex()!.objects[chainKey]!.mixed).toBeUndefined();
  });

  it("records the rp_filter value to put back before changing it, so a change cut short still restores it", () => {
    const { kernel, tx, store } = fixture();
    kernel.rpFilter = 1;
    kernel.failingApplies = 2; // the change and its rollback both fail, as if killed
    expect(() => tx().attach(planFor(2), EVERY_ADD)).toThrow(/simulated kernel refusal/);
    expect(store.readIndex()!.objects["rpFilter/eth0"]!.previous).toBe(1);
    kernel.rpFilter = 2; // the kernel was loosened before the crash
    tx().reconcile();
    tx().detach(planFor(2).id);
    expect(kernel.rpFilter).toBe(1);
  });

  it("keeps the rp_filter value found first, and puts it back with the last pod", () => {
    const { kernel, tx, store } = fixture();
    kernel.rpFilter = 1;
    tx().attach(planFor(2), EVERY_ADD);
    kernel.rpFilter = 2; // what the real kernel now holds
    tx().attach(planFor(3), EVERY_ADD);
    expect(store.readIndex()!.objects["rpFilter/eth0"]!.previous).toBe(1);
    tx().detach(planFor(2).id);
    tx().detach(planFor(3).id);
    expect(kernel.rpFilter).toBe(1);
  });
});

describe("engine: crashes", () => {
  it("a refused ADD is rolled back: the pod leaves nothing, the other pods keep theirs", () => {
    const { kernel, tx, store } = fixture();
    tx().attach(planFor(2), EVERY_ADD);
    const before = [...kernel.installed.keys()];
    kernel.failingApplies = 1;
    expect(() => tx().attach(planFor(3), EVERY_ADD)).toThrow(/simulated kernel refusal/);
    expect([...kernel.installed.keys()]).toEqual(before);
    expect(store.readRecord(planFor(3).id)).toBeUndefined();
    expect(store.readIndex()).toMatchObject({ dirty: false });
    expect(Object.values(store.readIndex()!.refs)).toEqual(Array(planFor(2).objects.length).fill(1));
  });

  it("an ADD whose change and rollback both fail (as if killed) leaves a record and a dirty index; reconcile converges", () => {
    const { kernel, tx, store } = fixture();
    tx().attach(planFor(2), EVERY_ADD);
    kernel.failingApplies = 2;
    expect(() => tx().attach(planFor(3), EVERY_ADD)).toThrow(/simulated kernel refusal/);
    expect(store.readIndex()!.dirty).toBe(true);
    expect(store.readRecord(planFor(3).id)).toBeDefined();

    tx().reconcile();
    expect(store.readIndex()!.dirty).toBe(false);
    expect(kernel.installed.has(`element/${setOf(planFor(3))}/10.244.0.3,veth3`)).toBe(true);
    // The runtime answers a failed ADD with DEL: everything goes.
    tx().detach(planFor(3).id);
    tx().detach(planFor(2).id);
    expect(kernel.installed.size).toBe(0);
  });

  it("recovery that fails does not block a DEL, and the index stays dirty for the next operation", () => {
    const { kernel, tx, store } = fixture();
    tx().attach(planFor(2), EVERY_ADD);
    tx().attach(planFor(3), EVERY_ADD);
    kernel.failingApplies = 2;
    expect(() => tx().attach(planFor(4), EVERY_ADD)).toThrow(/simulated kernel refusal/);
    kernel.failingApplies = 1; // the recovery's re-apply fails again
    const del = tx();
    del.recover();
    expect(del.summary.recoveryError).toMatch(/simulated kernel refusal/);
    expect(del.detach(planFor(4).id)).toBe(true);
    expect(store.readRecord(planFor(4).id)).toBeUndefined();
    expect(store.readIndex()!.dirty).toBe(true);
    const next = tx();
    next.recover();
    expect(next.summary.recoveryError).toBeUndefined();
    expect(store.readIndex()!.dirty).toBe(false);
  });

  it("a crash mid-DEL of the last pod is finished by reconcile: nothing left", () => {
    const { kernel, tx, store } = fixture();
    tx().attach(planFor(2), EVERY_ADD);
    kernel.failingApplies = 1;
    expect(() => tx().detach(planFor(2).id)).toThrow(/simulated kernel refusal/);
    expect(store.readIndex()!.dirty).toBe(true);
    tx().reconcile();
    // The record was still there, so reconcile re-installs; the runtime's retried DEL then removes.
    tx().detach(planFor(2).id);
    expect(kernel.installed.size).toBe(0);
    expect(store.listRecords()).toEqual([]);
  });

  it("reconcile repairs objects removed behind our back", () => {
    const { kernel, tx } = fixture();
    tx().attach(planFor(2), EVERY_ADD);
    kernel.installed.delete("rule/4/32765/16/16/100");
    const t = tx();
    expect(t.view.drift(planFor(2).objects).get("rule/4/32765/16/16/100")).toEqual(["rule/4/32765/16/16/100 is missing"]);
    t.reconcile();
    expect(kernel.installed.has("rule/4/32765/16/16/100")).toBe(true);
  });
});

function setOf(plan: ReturnType<typeof planFor>): string {
  const set = plan.objects.find((o) => o.kind === "ipset");
  return set && set.kind === "ipset" ? set.name : "";
}

function chainOf(plan: ReturnType<typeof planFor>): string {
  const chain = plan.objects.find((o) => o.kind === "markChain");
  return chain && chain.kind === "markChain" ? chain.chain : "";
}

const exemptOf = (o: KernelObject | undefined) => (o && o.kind === "markChain" ? o.exempt : undefined);

describe("engine: drift repaired by ADD", () => {
  const TEN_SECONDS = 10_000;
  const lose = (kernel: FakeKernel, kind: KernelObject["kind"]) => {
    const key = [...kernel.installed.entries()].find(([, o]) => o.kind === kind)![0];
    kernel.installed.delete(key);
    return key;
  };
  /** Makes the next ADD's check due, as if the last one was TEN_SECONDS ago. */
  const age = (store: MemoryStore) => {
    const index = store.readIndex()!;
    store.writeIndex({ ...index, checkedAt: index.checkedAt! - TEN_SECONDS });
  };

  it("when its check is due, an ADD reads the shared objects back and re-applies every record if one is gone", () => {
    const { kernel, tx, store } = fixture();
    tx().attach(planFor(2), TEN_SECONDS);
    const rule = lose(kernel, "rule");
    const element = lose(kernel, "element"); // pod 2's: put back by re-applying its record
    age(store);
    const before = Date.now();
    const t = tx();
    t.attach(planFor(3), TEN_SECONDS);
    expect(t.summary).toMatchObject({ driftChecked: true, repaired: [{ key: rule, problems: [`${rule} is missing`] }] });
    expect(kernel.installed.has(rule)).toBe(true);
    expect(kernel.installed.has(element)).toBe(true);
    const index = store.readIndex()!;
    expect(index.dirty).toBe(false);
    expect(index.checkedAt).toBeGreaterThanOrEqual(before);
    expect(index.refs[rule]).toBe(2);
  });

  it("between checks an ADD reads nothing back, and leaves drift it cannot see for the next check", () => {
    const { kernel, tx } = fixture();
    tx().attach(planFor(2), TEN_SECONDS);
    const reads = kernel.driftReads;
    const rule = lose(kernel, "rule");
    const t = tx();
    t.attach(planFor(3), TEN_SECONDS);
    expect(kernel.driftReads).toBe(reads);
    expect(t.summary.driftChecked).toBeUndefined();
    expect(t.summary.repaired).toBeUndefined();
    expect(kernel.installed.has(rule)).toBe(false);
  });

  it("a clock that went back makes the check due, once", () => {
    const { kernel, tx, store } = fixture();
    tx().attach(planFor(2), TEN_SECONDS);
    store.writeIndex({ ...store.readIndex()!, checkedAt: Date.now() + 3_600_000 });
    const reads = kernel.driftReads;
    tx().attach(planFor(3), TEN_SECONDS);
    expect(kernel.driftReads).toBe(reads + 1);
    tx().attach(planFor(4), TEN_SECONDS);
    expect(kernel.driftReads).toBe(reads + 1);
  });

  it("a read-back that fails does not fail the ADD: it is reported, and the next check waits its turn", () => {
    const { kernel, tx, store } = fixture();
    tx().attach(planFor(2), TEN_SECONDS);
    age(store);
    kernel.failingDrifts = 1;
    const t = tx();
    t.attach(planFor(3), TEN_SECONDS);
    expect(t.summary).toMatchObject({ driftChecked: true, driftCheckError: "simulated read failure" });
    expect(store.readRecord(planFor(3).id)).toBeDefined();
    const reads = kernel.driftReads;
    tx().attach(planFor(4), TEN_SECONDS);
    expect(kernel.driftReads).toBe(reads);
  });

  it("between checks, a refused ADD is read back at once: drift found is repaired and the ADD tried again", () => {
    const { kernel, tx, store } = fixture();
    tx().attach(planFor(2), TEN_SECONDS);
    const chain = lose(kernel, "markChain");
    kernel.failingApplies = 2; // as `ipset add` fails when someone destroyed the set, and so does the rollback's del
    const t = tx();
    t.attach(planFor(3), TEN_SECONDS);
    expect(t.summary).toMatchObject({ driftChecked: true, repaired: [{ key: chain, problems: [`${chain} is missing`] }] });
    expect(kernel.installed.has(chain)).toBe(true);
    expect(store.readRecord(planFor(3).id)).toBeDefined();
    expect(kernel.installed.has(`element/${setOf(planFor(3))}/10.244.0.3,veth3`)).toBe(true);
    expect(store.readIndex()).toMatchObject({ dirty: false });
    expect(Object.values(store.readIndex()!.refs)).toEqual(expect.arrayContaining([2]));
  });

  it("a refused ADD with nothing drifted stays refused, rolled back", () => {
    const { kernel, tx, store } = fixture();
    tx().attach(planFor(2), TEN_SECONDS);
    kernel.failingApplies = 1;
    expect(() => tx().attach(planFor(3), TEN_SECONDS)).toThrow(/simulated kernel refusal/);
    expect(store.readRecord(planFor(3).id)).toBeUndefined();
  });

  it("a refused ADD whose read-back fails stays refused with the kernel's own error", () => {
    const { kernel, tx } = fixture();
    tx().attach(planFor(2), TEN_SECONDS);
    kernel.failingApplies = 1;
    kernel.failingDrifts = 1;
    expect(() => tx().attach(planFor(3), TEN_SECONDS)).toThrow(/simulated kernel refusal/);
  });

  it("a repair the kernel refuses does not block the ADD: it installs what it needs itself, the index stays dirty for the next try", () => {
    const { kernel, tx, store } = fixture();
    tx().attach(planFor(2), TEN_SECONDS);
    const rule = lose(kernel, "rule");
    kernel.failingApplies = 1; // the repair's
    const t = tx();
    t.attach(planFor(3), EVERY_ADD);
    expect(t.summary).toMatchObject({ driftChecked: true, recoveryError: "simulated kernel refusal" });
    expect(t.summary.repaired).toBeUndefined();
    expect(kernel.installed.has(rule)).toBe(true);
    expect(store.readIndex()!.dirty).toBe(true);
  });

  it("a recovery that failed at the start is retried by the drift check; when that heals, the index is clean and no error is left", () => {
    const { kernel, tx, store } = fixture();
    tx().attach(planFor(2), TEN_SECONDS);
    store.writeIndex({ ...store.readIndex()!, dirty: true }); // a predecessor died midway
    const rule = lose(kernel, "rule");
    kernel.failingApplies = 1; // the recovery at the start of the operation
    const index = store.readIndex()!;
    const t = new Session(store, kernel, index, 0, true);
    t.recover();
    expect(t.summary.recoveryError).toBe("simulated kernel refusal");
    t.attach(planFor(3), EVERY_ADD);
    expect(t.summary.recoveryError).toBeUndefined();
    expect(t.summary.repaired).toEqual([{ key: rule, problems: [`${rule} is missing`] }]);
    expect(store.readIndex()!.dirty).toBe(false);
  });

  it("right after a recovery re-applied every record, the ADD does not read back again", () => {
    const { kernel, tx, store } = fixture();
    tx().attach(planFor(2), TEN_SECONDS);
    store.writeIndex({ ...store.readIndex()!, dirty: true });
    const t = new Session(store, kernel, store.readIndex()!, 0, true);
    t.recover();
    const reads = kernel.driftReads;
    t.attach(planFor(3), EVERY_ADD);
    expect(kernel.driftReads).toBe(reads);
    expect(t.summary.driftChecked).toBeUndefined();
  });
});

describe("engine: the agent's repair pass", () => {
  const elementOf = (pod: number) => `element/${setOf(planFor(pod))}/10.244.0.${pod},veth${pod}`;

  it("reads back each pod's own element too (an ADD's check sees only shared objects) and re-applies every record when one is gone", () => {
    const { kernel, tx } = fixture();
    tx().attach(planFor(2), EVERY_ADD);
    tx().attach(planFor(3), EVERY_ADD);
    kernel.installed.delete(elementOf(2));
    expect(tx().sharedDrift().size).toBe(0);
    const pass = tx();
    expect(pass.repair()).toEqual([{ key: elementOf(2), problems: [`${elementOf(2)} is missing`] }]);
    expect(kernel.installed.has(elementOf(2))).toBe(true);
    expect(pass.summary.installed).toContain(elementOf(2));
  });

  it("finds nothing and changes nothing on a node as recorded; `only` narrows what is read back", () => {
    const { kernel, tx, store } = fixture();
    tx().attach(planFor(2), EVERY_ADD);
    const index = JSON.stringify(store.readIndex());
    const pass = tx();
    expect(pass.repair()).toEqual([]);
    expect(pass.summary.installed).toEqual([]);
    expect(JSON.stringify(store.readIndex())).toBe(index);
    kernel.installed.delete("rule/4/32765/16/16/100");
    expect(tx().repair((o) => o.kind === "element")).toEqual([]);
    expect(tx().repair((o) => o.kind === "rule").map((r) => r.key)).toEqual(["rule/4/32765/16/16/100"]);
    expect(kernel.installed.has("rule/4/32765/16/16/100")).toBe(true);
  });

  /** Pod 2 attached, its element then deleted behind our back, and the kernel refusing the next apply. */
  const refusingPass = () => {
    const { kernel, tx, store } = fixture();
    tx().attach(planFor(2), EVERY_ADD);
    kernel.installed.delete(elementOf(2));
    kernel.failingApplies = 1;
    return { pass: tx(), store };
  };

  it("a repair the kernel refuses is the summary's recovery error and leaves the index dirty for the next operation", () => {
    const { pass, store } = refusingPass();
    expect(pass.repair()).toEqual([{ key: elementOf(2), problems: [`${elementOf(2)} is missing`] }]);
    expect(pass.summary.recoveryError).toMatch(/simulated kernel refusal/);
    expect(store.readIndex()!.dirty).toBe(true);
  });

  it("a repair that succeeds after a failed recovery in the same pass leaves the index clean and no error", () => {
    const { pass, store } = refusingPass();
    pass.recover();
    expect(pass.summary.recoveryError).toMatch(/simulated kernel refusal/);
    expect(pass.repair().map((r) => r.key)).toEqual([elementOf(2)]);
    expect(pass.summary.recoveryError).toBeUndefined();
    expect(store.readIndex()!.dirty).toBe(false);
  });
});
