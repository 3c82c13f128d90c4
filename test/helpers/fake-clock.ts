// A Clock for unit tests of loops and retries: time moves only when the test says so.
import type { CancelTimer, Clock } from "../../src/timing/clock.js";

interface Timer {
  at: number;
  seq: number;
  fn: () => void;
}

export class FakeClock implements Clock {
  private t: number;
  private seq = 0;
  private timers: Timer[] = [];

  constructor(start = Date.UTC(2030, 0, 1)) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimer(fn: () => void, ms: number): CancelTimer {
    const timer = { at: this.t + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((x) => x !== timer);
    };
  }

  /** Pending timers' due times, soonest first (ms from now). */
  pending(): number[] {
    return this.timers.map((x) => x.at - this.t).sort((a, b) => a - b);
  }

  /**
   * Moves time forward by `ms`, firing due timers in order; after each one, lets promise
   * callbacks run so that work a timer starts can schedule the next timer.
   */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await settle();
      const due = this.timers.filter((x) => x.at <= end).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!due) break;
      this.timers = this.timers.filter((x) => x !== due);
      this.t = Math.max(this.t, due.at);
      due.fn();
    }
    this.t = end;
    await settle();
  }

  /** Fires the next timer, whenever it is due; returns how far time moved. */
  async next(): Promise<number> {
    await settle();
    const d = this.pending()[0];
    if (d === undefined) throw new Error("FakeClock.next(): no timer pending");
    await this.advance(d);
    return d;
  }
}

/** Lets pending promise callbacks (and the ones they queue) run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise<void>((r) => setImmediate(r));
}
