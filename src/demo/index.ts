// `meshvault demo` as a library.
export { runDemo, type DemoOptions, type DemoResult, type DemoOutcome, type DemoIdentity } from "./run.js";
export {
  registerDemoAuthority,
  demoAuthority,
  demoAuthorities,
  localAuthority,
  type DemoAuthorityProvider,
  type DemoAuthorityContext,
  type PreparedAuthority,
} from "./authority-hook.js";
export { startHttpbin, type HttpbinApp } from "./httpbin.js";
