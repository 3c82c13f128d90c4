// The zod `duration` field shared by every configuration schema: "24h", "90d", "30m", or
// seconds; parsed to seconds (src/config/duration.ts), with parseDuration's message as the issue.
// The zod module is passed in rather than imported so that src/agent/config.ts, which loads zod
// lazily (only when a configuration needs it), can use it without loading zod up front.
import type { z as Zod } from "zod";
import { parseDuration } from "./duration.js";

/** A duration field built with `z`: "24h", "90d", "30m", or seconds; parsed to seconds. */
export function durationSchema(z: typeof Zod) {
  return z.union([z.string(), z.number()]).transform((v, ctx) => {
    try {
      return parseDuration(v);
    } catch (err) {
      ctx.addIssue({ code: "custom", message: (err as Error).message });
      return z.NEVER;
    }
  });
}
