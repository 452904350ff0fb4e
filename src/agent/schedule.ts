// When the agent runs a pass: events come in bursts (one ADD, or one repair, makes several), so a
// pass starts once they have been quiet for a moment, and never later than a bound after the
// first; passes never overlap, and a request during a pass gets one more pass after it.

/** What asked for a pass; all but "poll" read everything back ("poll" reads only what has no events). */
export type Trigger = "start" | "event" | "poll" | "resync";

export const QUIET_MS = 150;
export const MAX_DELAY_MS = 500;

export class PassScheduler {
  private timer: NodeJS.Timeout | undefined;
  private firstAt = 0;
  private wanted: Trigger | undefined;
  private running = false;
  private stopped = false;
  /** When a pass was first asked for that none has served yet (undefined: none is wanted or running). */
  private waitingSince: number | undefined;
  private lastEnded: number;

  constructor(private readonly run: (trigger: Trigger) => Promise<void>, private readonly now: () => number = Date.now) {
    this.lastEnded = now();
  }

  /** A pass after `quietMs` without another request (at most MAX_DELAY_MS after the first one waiting). */
  request(trigger: Trigger, quietMs = QUIET_MS): void {
    if (this.stopped) return;
    this.waitingSince ??= this.now();
    // A full read-back covers a poll's; a poll never narrows a full one already asked for.
    this.wanted = this.wanted && this.wanted !== "poll" ? this.wanted : trigger;
    if (this.running) return; // run again when the pass under way ends
    if (this.timer === undefined) this.firstAt = this.now();
    clearTimeout(this.timer);
    const delay = Math.max(0, Math.min(quietMs, this.firstAt + MAX_DELAY_MS - this.now()));
    this.timer = setTimeout(() => void this.fire(), delay);
  }

  /** True while a pass runs (a poll is skipped then: the pass under way reads everything). */
  get busy(): boolean {
    return this.running || this.timer !== undefined;
  }

  /**
   * How long passes have been wanted without one ending (0: none is wanted): /healthz's measure of
   * an agent that no longer makes progress (a pass waiting for the lock or for a tool that hangs).
   */
  stalledMs(): number {
    return this.waitingSince === undefined ? 0 : this.now() - Math.max(this.waitingSince, this.lastEnded);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async fire(): Promise<void> {
    this.timer = undefined;
    const trigger = this.wanted;
    this.wanted = undefined;
    if (!trigger || this.stopped) return;
    this.running = true;
    try {
      await this.run(trigger);
    } finally {
      this.running = false;
      this.lastEnded = this.now();
      if (!this.wanted) this.waitingSince = undefined;
      else this.request(this.wanted, 0);
    }
  }
}

/**
 * Put-backs of one thing beyond `limit` within `windowMs` mean someone keeps undoing them (an
 * installer that regenerates the conflist, as Multus's does): rather than fight it endlessly, the
 * agent pauses putting it back for `pauseMs`, then tries again.
 */
export class RepairBrake {
  private times: number[] = [];
  private pausedUntil = 0;

  constructor(
    readonly limit: number,
    readonly windowMs: number,
    readonly pauseMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** How long the pause still lasts (0: not paused). */
  pausedFor(): number {
    return Math.max(0, this.pausedUntil - this.now());
  }

  /** One more put-back; true when that makes too many within the window, and the pause starts. */
  record(): boolean {
    const now = this.now();
    this.times = [...this.times.filter((t) => now - t < this.windowMs), now];
    if (this.times.length <= this.limit) return false;
    this.times = [];
    this.pausedUntil = now + this.pauseMs;
    return true;
  }
}
