// A rotation state for the store tests (placeholder roots, one history entry per phase), and the
// scenario every compare-and-set store must pass whatever keeps it (file, Vault KV v2, ConfigMap).
import assert from "node:assert/strict";
import type { Phase, RotationState, RotationStore } from "../../src/rotation/state.js";

const root = (name: string): RotationState["old"] => ({
  fingerprint: name,
  pem: `-----BEGIN CERTIFICATE-----\n${name}\n-----END CERTIFICATE-----\n`,
  subject: `CN=${name}`,
  notAfter: "2036-01-01T00:00:00.000Z",
});

/** Rotation `id` of `authority` that went through `phases` (the last one is current). */
export function stateThrough(authority: string, id: string, ...phases: Phase[]): RotationState {
  return {
    id,
    authority,
    phase: phases.at(-1)!,
    old: root("old"),
    next: root("new"),
    startedAt: "2026-11-30T18:00:00.000Z",
    history: phases.map((phase, i) => ({ phase, at: `2026-11-30T18:0${i}:00.000Z` })),
  };
}

export interface StoreUnderTest {
  /** A new store on the one location, as another operator's process would open it. */
  open(): RotationStore;
  /** The authority the states name. */
  authority: string;
  /** The location as the refusal names it: `file:/path`, `vault:secret/data/...`. */
  where: string;
  /** What the backend must hold after the first write (a file's mode). */
  afterFirstWrite?(): Promise<void> | void;
  /** What the backend must hold after the refused write (KV versions, no lock left). */
  afterRefusal?(): Promise<void> | void;
}

/**
 * Two operators read the same "prepared" state and both write "trust-both": the second is
 * refused with the shared message and the store keeps the first one's step; the second,
 * having read again (as `meshvault root status` + retry would), takes the next step.
 */
export async function twoOperatorsAdvanceTheSamePhase(t: StoreUnderTest): Promise<void> {
  const state = (...phases: Phase[]): RotationState => stateThrough(t.authority, "r-1", ...phases);
  const first = t.open();
  assert.equal(await first.read(), undefined);
  await first.write(state("prepared"));
  await t.afterFirstWrite?.();

  const [a, b] = [t.open(), t.open()];
  assert.equal((await a.read())?.phase, "prepared");
  assert.equal((await b.read())?.phase, "prepared");
  const byA = state("prepared", "trust-both");
  await a.write(byA);
  await assert.rejects(b.write({ ...state("prepared", "trust-both"), startedAt: "by b" }), (err: Error) => {
    assert.equal(err.name, "RotationStateError");
    assert.equal(
      err.message,
      `rotation state ${t.where} changed since it was read (another meshvault root rotate wrote it first): ` +
        "it now holds rotation r-1 at phase trust-both; this step (to trust-both) was not recorded. " +
        "Run meshvault root status and retry if the step is still needed",
    );
    return true;
  });
  assert.deepEqual(await t.open().read(), byA, "the refused write changed nothing");
  await t.afterRefusal?.();

  assert.equal((await b.read())?.phase, "trust-both");
  await b.write(state("prepared", "trust-both", "switched"));
  assert.equal((await a.read())?.phase, "switched");
}
