// One message style for every configuration error (server, agent, the sections inside them):
//   invalid <what> configuration (<source>):
//     <dotted.path>: <what is wrong>
// and, for a misspelled field, the field that was probably meant.
import type { z } from "zod";

export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Levenshtein distance, case-insensitive: `maxTTL` is 0 away from `maxTtl`. */
function distance(a: string, b: string): number {
  a = a.toLowerCase();
  b = b.toLowerCase();
  let before: number[] = [];
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      // A swap of two neighbours (grcp -> grpc) is one typo, not two.
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        cur[j] = Math.min(cur[j]!, before[j - 2]! + 1);
    }
    before = prev;
    prev = cur;
  }
  return prev[b.length]!;
}

/** The known name closest to `name`, if it is close enough to be a typo. */
export function didYouMean(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const d = distance(name, k);
    if (d < bestD) [best, bestD] = [k, d];
  }
  return best !== undefined && bestD <= Math.max(1, Math.floor(best.length / 3)) ? best : undefined;
}

type Def = Record<string, unknown> & { type?: string };
const defOf = (s: unknown): Def | undefined => (s as { def?: Def } | undefined)?.def;

/** Unwraps defaults, optionals, pipes and the like down to the schema that holds fields. */
function unwrap(schema: unknown): unknown {
  for (let i = 0; i < 20; i++) {
    const d = defOf(schema);
    const inner = d?.innerType ?? d?.in ?? d?.schema;
    if (!inner || d?.shape || d?.options || d?.element) return schema;
    schema = inner;
  }
  return schema;
}

/** The field names the schema allows where `path` points (following the input for unions). */
export function knownFields(schema: unknown, input: unknown, path: readonly PropertyKey[]): string[] {
  let s = unwrap(schema);
  let value = input;
  const step = (): string[] | undefined => {
    const d = defOf(s);
    if (!d?.options) return undefined;
    // A union of objects (authority blocks): the variant whose discriminator matches, else all.
    const options = d.options as unknown[];
    const disc = d.discriminator as string | undefined;
    const tag =
      disc && value && typeof value === "object" ? (value as Record<string, unknown>)[disc] : undefined;
    const pick = options.filter((o) => {
      const shape = defOf(unwrap(o))?.shape as Record<string, unknown> | undefined;
      const lit = shape && disc ? defOf(unwrap(shape[disc]))?.values : undefined;
      return tag === undefined || (Array.isArray(lit) && lit.includes(tag));
    });
    s = pick.length === 1 ? unwrap(pick[0]) : s;
    return pick.length === 1
      ? undefined
      : [...new Set(pick.flatMap((o) => Object.keys((defOf(unwrap(o))?.shape as object) ?? {})))];
  };
  for (const key of path) {
    const many = step();
    if (many) return [];
    const d = defOf(s);
    if (d?.shape) s = unwrap((d.shape as Record<string, unknown>)[String(key)]);
    else if (d?.element) s = unwrap(d.element);
    else return [];
    value = value && typeof value === "object" ? (value as Record<PropertyKey, unknown>)[key] : undefined;
  }
  const many = step();
  if (many) return many;
  return Object.keys((defOf(s)?.shape as object) ?? {});
}

export interface IssueContext {
  /** The schema and the input it rejected: used to suggest the field a typo meant. */
  schema?: unknown;
  input?: unknown;
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let v = input;
  for (const k of path) v = v && typeof v === "object" ? (v as Record<PropertyKey, unknown>)[k] : undefined;
  return v;
}

/** zod's wording without its "Invalid input:" prefixes, with the value that was given. */
function message(i: z.core.$ZodIssue, input: unknown): string {
  if (i.code !== "invalid_type" && i.code !== "invalid_value") return i.message;
  const given = valueAt(input, i.path);
  if (i.code === "invalid_type" && given === undefined) return "required, but missing";
  const text = i.message.replace(/^Invalid (input|option): /, "");
  const shown = JSON.stringify(given);
  return given === undefined || shown === undefined || shown.length > 60 ? text : `${text}; got ${shown}`;
}

/** One line per issue, `  path: message`, with "did you mean" for unknown fields. */
export function formatIssues(
  error: z.ZodError,
  source: string,
  what = "server",
  ctx: IssueContext = {},
): string {
  const lines = error.issues.map((i) => {
    const field = i.path.length ? i.path.join(".") : "(top level)";
    if (i.code !== "unrecognized_keys") return `  ${field}: ${message(i, ctx.input)}`;
    const known = ctx.schema ? knownFields(ctx.schema, ctx.input, i.path) : [];
    return i.keys
      .map((k) => {
        const hint = didYouMean(k, known);
        const at = i.path.length ? `${field}.${k}` : k;
        return hint
          ? `  ${at}: unknown field; did you mean "${hint}"?`
          : `  ${at}: unknown field${known.length ? ` (known here: ${known.join(", ")})` : ""}`;
      })
      .join("\n");
  });
  return `invalid ${what} configuration (${source}):\n${lines.join("\n")}`;
}
