// A rotation state for the store tests: placeholder roots, one history entry per phase.
import type { Phase, RotationState } from "../../src/rotation/state.js";

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
