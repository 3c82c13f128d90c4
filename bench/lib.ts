// Shared benchmark helpers: timing loops, percentiles, table output. Benchmarks
// print measured numbers next to a baseline measured in the same run.

export interface Rate {
  ops: number;
  seconds: number;
  perSecond: number;
  /** CPU time of this process (all threads) per operation, microseconds. */
  cpuUsPerOp: number;
}

/** Runs `fn` repeatedly for about `seconds`, `concurrency` at a time. Returns rate, CPU and latencies (ms). */
export async function measure(
  fn: () => Promise<unknown> | unknown,
  {
    seconds = 3,
    concurrency = 1,
    warmup = 0.5,
  }: { seconds?: number; concurrency?: number; warmup?: number } = {},
): Promise<Rate & { latenciesMs: number[] }> {
  const run = async (dur: number, record: boolean): Promise<{ ops: number; lat: number[] }> => {
    const end = performance.now() + dur * 1000;
    let ops = 0;
    const lat: number[] = [];
    const worker = async (): Promise<void> => {
      while (performance.now() < end) {
        const t = performance.now();
        await fn();
        if (record) lat.push(performance.now() - t);
        ops++;
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return { ops, lat };
  };
  if (warmup > 0) await run(warmup, false);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const { ops, lat } = await run(seconds, true);
  const s = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  return {
    ops,
    seconds: s,
    perSecond: ops / s,
    cpuUsPerOp: (c.user + c.system) / Math.max(1, ops),
    latenciesMs: lat,
  };
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export function fmt(n: number, digits = 0): string {
  return n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export const pct = (part: number, whole: number): string => `${fmt((100 * part) / whole, 1)}%`;

export function table(rows: (string | number)[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows.map((r) => r.map((c, i) => String(c).padEnd(widths[i]!)).join("  ")).join("\n");
}
