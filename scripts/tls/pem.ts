/**
 * What tls_server.ts and tls_client.ts share: where the learning certificates are, and reading
 * a PEM file (`--cert`, `--key`, `--ca`) with one `error:` line for each way it can fail.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { CliError } from "../../lib/cli.ts";

/**
 * A path a flag gave: a default (`certs/...`) is found in this project wherever you run from;
 * a path you typed is read from where you are, as every program does.
 */
export function certPath(path: string, fallback: string): string {
  return path === fallback ? fileURLToPath(new URL(`../../${path}`, import.meta.url)) : path;
}

const MARKERS = {
  certificate: /-----BEGIN CERTIFICATE-----/,
  "private key": /-----BEGIN (EC |RSA )?PRIVATE KEY-----/,
};

/** The text of PEM file `path` given with `--flag`, holding a `what`; else a one-line CliError. */
export async function readPem(
  flag: string,
  path: string,
  what: keyof typeof MARKERS,
): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    const e = Deno.errors;
    const because = err instanceof e.NotFound
      ? "no such file"
      : err instanceof e.IsADirectory || (err as { code?: string }).code === "EISDIR"
      ? "a folder, not a file"
      : err instanceof e.NotCapable
      ? `no permission (the task may read certs/ only: put it there, or deno run --allow-read=${path} ...)`
      : err instanceof e.PermissionDenied
      ? "the file is not readable (permission denied)"
      : (err as Error).message.split("\n")[0];
    throw new CliError(`cannot read --${flag} ${path}: ${because}`);
  }
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----/.test(text)) {
    throw new CliError(
      `--${flag} ${path} is encrypted with a passphrase: Deno needs it plain ` +
        `(openssl pkey -in ${path} -out plain-key.pem)`,
    );
  }
  if (!MARKERS[what].test(text)) {
    throw new CliError(`--${flag} ${path} holds no PEM ${what} (no '-----BEGIN' line for one)`);
  }
  return text;
}
