// The workload's service-account token, re-read on every CA call because the
// kubelet (or `meshvault token create`) rotates the file in place.
import { promises as fs } from "node:fs";

/** The token, or undefined when the file does not exist (istio-agent then omits the header). */
export async function readToken(file: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await fs.readFile(file, "utf8");
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
