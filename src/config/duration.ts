// Durations as operators write them: Go/Vault style ("90s", "30m", "24h", "2160h",
// "1h30m"), days ("90d"), or a bare number of seconds.

const UNITS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };

export class DurationError extends Error {
  override name = "DurationError";
}

/** Seconds in `input`; throws DurationError naming the bad value. */
export function parseDuration(input: string | number): number {
  if (typeof input === "number") {
    if (!Number.isFinite(input) || input < 0)
      throw new DurationError(`duration ${input} must be a non-negative number of seconds`);
    return input;
  }
  const s = input.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s))) {
    total += Number(m[1]) * UNITS[m[2]!]!;
    pos = re.lastIndex;
  }
  if (pos !== s.length || s.length === 0)
    throw new DurationError(
      `${JSON.stringify(input)} is not a duration: use e.g. "90s", "30m", "24h", "90d" or seconds`,
    );
  return total;
}

/** "1d 2h", "45m", "30s": for humans reading logs and reports. */
export function formatDuration(seconds: number): string {
  const neg = seconds < 0;
  let s = Math.round(Math.abs(seconds));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  const parts = d ? [`${d}d`, h ? `${h}h` : ""] : h ? [`${h}h`, m ? `${m}m` : ""] : m ? [`${m}m`] : [`${s}s`];
  return (neg ? "-" : "") + parts.filter(Boolean).join(" ");
}
