// The state of a root rotation, kept where every replica reads it: a Vault KV v2 secret for
// the Vault-backed authorities, or a file in the data directory for the local and files
// authorities (whose CA lives in that directory: every replica sharing the CA shares it).
// Servers only read it; `meshvault root rotate` writes it, one step at a time. Every store
// (Vault KV v2, kube-state.ts, the file) writes only over what it last read, so two operators
// cannot both advance a phase; KV v1 has no check-and-set and is refused.
import { mkdirSync, readFileSync } from "node:fs";
import { basename, dirname } from "node:path";
import { writeFileAtomicSync } from "../fs/atomic-write.js";
import { DirLockedError, lockDir } from "../fs/dir-lock.js";
import { fsReason } from "../fs/errors.js";
import {
  readKv,
  writeKv,
  parseKvReference,
  VaultBadRequestError,
  VaultConfigError,
  type VaultClient,
} from "../vault/index.js";

/** The four steps, in order. A rotation is finished when it reached `retired`. */
export const PHASES = ["prepared", "trust-both", "switched", "retired"] as const;
export type Phase = (typeof PHASES)[number];

export interface RootRef {
  fingerprint: string;
  pem: string;
  subject: string;
  notAfter: string;
  /** Vault issuer id in the root mount (vault-intermediate). */
  issuer?: string | undefined;
}

export interface RotationState {
  /** e.g. `r-20261130T144012Z`: names the new root's issuer and directories. */
  id: string;
  /** Authority kind the rotation was started for. */
  authority: string;
  phase: Phase;
  old: RootRef;
  next: RootRef;
  startedAt: string;
  /** When each phase was entered. */
  history: { phase: Phase; at: string }[];
  /** Set by the retire step: the moment the longest old-root leaf expired (as computed then). */
  oldLeavesValidUntil?: string | undefined;
  /**
   * `root rotate --cross-sign`: the new root certified by the old root. In `switched` servers
   * send it after the new intermediate, so a peer still holding only the old root verifies
   * new leaves; dropped from chains at `retired`.
   */
  cross?: { pem: string; fingerprint: string; notAfter: string } | undefined;
  /** `root rotate --import-root`: the new root was made outside Vault and imported (Vault issuer id in next.issuer). */
  imported?: boolean | undefined;
}

export function phaseIndex(p: Phase | undefined): number {
  return p ? PHASES.indexOf(p) : -1;
}

export function enteredAt(s: RotationState, p: Phase): Date | undefined {
  const h = s.history.find((x) => x.phase === p);
  return h ? new Date(h.at) : undefined;
}

export interface RotationStore {
  /** Where, for messages: `vault:secret/data/...` or `file:/path`. */
  readonly location: string;
  read(): Promise<RotationState | undefined>;
  write(s: RotationState): Promise<void>;
}

export class RotationStateError extends Error {
  override name = "RotationStateError";
}

function check(raw: unknown, where: string): RotationState | undefined {
  if (raw === undefined || raw === null) return undefined;
  const s = raw as Partial<RotationState>;
  if (
    !s.id ||
    !s.phase ||
    !PHASES.includes(s.phase) ||
    !s.old?.pem ||
    !s.next?.pem ||
    !Array.isArray(s.history)
  )
    throw new RotationStateError(
      `rotation state at ${where} is not one meshvault wrote (missing id, phase, old, next or history): ` +
        `restore it or delete it to start over (meshvault root status shows what it holds)`,
    );
  return s as RotationState;
}

/** Checks that `raw` is a state meshvault wrote (`where` names the store in the error). */
export { check as checkRotationState };

/**
 * The refusal of a write whose store changed since it was read; `now` is what it holds now
 * (undefined when that could not be read). One message for every compare-and-set store.
 */
export function changedSinceRead(
  where: string,
  now: { id?: string; phase?: string } | undefined,
  to: Phase,
  cause: unknown,
): RotationStateError {
  const holds = now ? ` it now holds rotation ${now.id} at phase ${now.phase};` : "";
  return new RotationStateError(
    `rotation state ${where} changed since it was read (another meshvault root rotate wrote it first):` +
      `${holds} this step (to ${to}) was not recorded. Run meshvault root status and retry if the step is still needed`,
    { cause },
  );
}

/**
 * KV v2 secret with one field, `state`, holding the JSON. Every write carries `options.cas`:
 * the version the last read saw (0 when there was none), so Vault refuses a write over a
 * version someone else wrote since.
 */
export function vaultRotationStore(client: VaultClient, ref: string): RotationStore {
  const kv = parseKvReference(ref);
  if (kv.version !== 2)
    throw new VaultConfigError(
      `rotation.state ${ref} is a KV v1 reference: KV v1 has no check-and-set, so two operators could both ` +
        `advance a phase. Use a KV v2 mount: vault:<mount>/data/<path> (e.g. vault:secret/data/meshvault/root-rotation/<trust domain>)`,
      { address: client.address },
    );
  // The version the last read saw: 0 = no secret, undefined = never read.
  let seen: number | undefined;
  const readState = async (): Promise<{ version: number; raw: unknown }> => {
    const s = await readKv(client, kv);
    const text = s?.data["state"];
    return { version: s?.version ?? 0, raw: typeof text === "string" ? JSON.parse(text) : undefined };
  };
  return {
    location: ref,
    async read() {
      const { version, raw } = await readState();
      seen = version;
      return check(raw, ref);
    },
    async write(s) {
      if (seen === undefined)
        throw new RotationStateError(`rotation state ${ref} written before it was read (a bug)`);
      try {
        seen = await writeKv(client, kv, { state: JSON.stringify(s) }, { cas: seen });
      } catch (err) {
        if (!(err instanceof VaultBadRequestError && err.vaultErrors.some((m) => /check-and-set/i.test(m))))
          throw err;
        let now: RotationState | undefined;
        try {
          const cur = await readState();
          now = check(cur.raw, ref);
          // A retried POST whose first attempt landed is refused by its own write: not a conflict.
          if (JSON.stringify(now) === JSON.stringify(s)) {
            seen = cur.version;
            return;
          }
        } catch {
          /* the refusal below is the message that matters */
        }
        if (now === undefined && seen === 0)
          // Read as absent, yet not creatable with cas 0: only deleted versions are left.
          throw new RotationStateError(
            `rotation state ${ref} holds only deleted versions, which KV v2 check-and-set cannot create over: ` +
              `remove them (bao kv metadata delete ${kv.mount}/${kv.path}) and retry`,
            { cause: err },
          );
        throw changedSinceRead(ref, now, s.phase, err);
      }
    },
  };
}

/**
 * A JSON file (the data directory's `root-rotation.json`). A write holds a lock file next to it
 * while it checks that the file still holds what the last read saw, then replaces it atomically:
 * the same compare-and-set as the shared stores, for two operators on one machine.
 */
export function fileRotationStore(path: string): RotationStore {
  const where = `file:${path}`;
  // The text the last read saw: null = no file, undefined = never read.
  let seen: string | null | undefined;
  const readText = (): string | null => {
    try {
      return readFileSync(path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw new RotationStateError(`cannot read rotation state ${path}: ${fsReason(err)}`, { cause: err });
    }
  };
  const parse = (text: string | null): RotationState | undefined => {
    if (text === null) return undefined;
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new RotationStateError(
        `rotation state ${path} is not JSON (${(err as Error).message}): restore it or delete it to start over ` +
          `(meshvault root status shows what it holds)`,
        { cause: err },
      );
    }
    return check(raw, path);
  };
  return {
    location: where,
    async read() {
      const text = readText();
      const s = parse(text);
      seen = text;
      return s;
    },
    async write(s) {
      if (seen === undefined)
        throw new RotationStateError(`rotation state ${where} written before it was read (a bug)`);
      const dir = dirname(path);
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      let release: () => void;
      try {
        release = lockDir(dir, `${basename(path)}.lock`, "meshvault root rotate");
      } catch (err) {
        if (!(err instanceof DirLockedError)) throw err;
        throw new RotationStateError(
          `rotation state ${where} is being written by another meshvault root rotate (pid ${err.pid}): ` +
            `this step (to ${s.phase}) was not recorded. Run meshvault root status and retry once it has finished`,
          { cause: err },
        );
      }
      try {
        const text = `${JSON.stringify(s, null, 2)}\n`;
        const now = readText();
        if (now !== seen) {
          // A retried step whose first attempt landed finds exactly its own write: not a conflict.
          if (now === text) {
            seen = now;
            return;
          }
          let current: RotationState | undefined;
          try {
            current = parse(now);
          } catch {
            /* the refusal below is the message that matters */
          }
          throw changedSinceRead(where, current, s.phase, undefined);
        }
        writeFileAtomicSync(path, text, 0o644);
        seen = text;
      } finally {
        release();
      }
    },
  };
}
