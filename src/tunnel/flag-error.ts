// A tunnel flag the user must change (missing --allow, a bad pattern, an address that is not
// host:port): the CLI exits 2 for it, like every bad flag.
export class TunnelFlagError extends Error {
  override name = "TunnelFlagError";
}
