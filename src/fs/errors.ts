// File-system errors in words: "no such file or directory (ENOENT)" rather than a bare code.
// The caller names the file and the setting that pointed at it; this says what went wrong.

const WORDS: Record<string, string> = {
  ENOENT: "no such file or directory",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EISDIR: "is a directory, expected a file",
  ENOTDIR: "a path component is not a directory",
  EROFS: "read-only file system",
  ENOSPC: "no space left on the device",
  ELOOP: "too many symbolic links",
  EEXIST: "already exists",
  EMFILE: "too many open files",
  ENAMETOOLONG: "file name too long",
};

/** "permission denied (EACCES)" for an fs error; its message otherwise. */
export function fsReason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  const code = typeof e?.code === "string" ? e.code : undefined;
  if (!code) return e instanceof Error ? e.message : String(err);
  const words = WORDS[code];
  if (!words) return e.message || code;
  return `${words} (${code})`;
}
