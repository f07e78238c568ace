/**
 * The command line every script shares: flags, `--help`, validation, colour,
 * and one-line `error:` messages instead of stack traces.
 *
 * - `--help` prints usage with defaults and maxima and exits 0.
 * - A bad value, a value past its maximum or an unknown flag prints one line
 *   `error: ... (see --help)` on stderr and exits 2.
 * - {@linkcode runMain} turns any failure at run time into one `error:` line
 *   and exit code 1.
 *
 * @example
 * ```ts
 * import { parseCli } from "./cli.ts";
 * const args = parseCli({
 *   name: "greeter",
 *   summary: "Says hello to a port.",
 *   options: {
 *     host: { kind: "host", default: "127.0.0.1", help: "address to listen on" },
 *     port: { kind: "port", short: "p", default: 8888, help: "TCP port" },
 *     loud: { kind: "boolean", help: "shout" },
 *   },
 *   args: ["--port", "9000"],
 * });
 * console.log(args.host, args.port, args.loud); // 127.0.0.1 9000 false
 * ```
 *
 * @module
 */

import { parseArgs, styleText } from "node:util";
import { runExitHooks } from "./signals.ts";
import { showBytes } from "./text.ts";
import { ReadTimeoutError } from "./io.ts";

/** How a flag's value is read and checked. */
export type OptionKind =
  | "string"
  | "strings"
  | "boolean"
  | "host"
  | "port"
  | "integer"
  | "seconds";

/** One flag of a script. */
export interface OptionSpec {
  /** How the value is parsed: `port` is 0-65535, `integer` a whole number, `seconds` a decimal. */
  kind: OptionKind;
  /** One-letter alias, e.g. `p` for `-p`. */
  short?: string;
  /** Used when the flag is absent. Without one, an absent flag is `undefined`. */
  default?: string | number | boolean | string[];
  /** One line for `--help`. */
  help: string;
  /** Smallest accepted number (`integer`, `seconds`). Default 0. */
  min?: number;
  /**
   * Largest accepted number (`integer`, `seconds`), shown in `--help`.
   * Default: one day for `seconds`, 1,000,000,000 for `integer`.
   */
  max?: number;
  /** Name of the value in `--help`, e.g. `N`. */
  valueName?: string;
}

/** The type of a parsed flag of the given kind. */
export type ValueOf<S extends OptionSpec> = S["kind"] extends "boolean" ? boolean
  : S["kind"] extends "strings" ? string[]
  : S["kind"] extends "string" | "host" ? string
  : number;

/** The parsed flags: a flag without a default may be `undefined`. */
export type Parsed<T extends Record<string, OptionSpec>> = {
  [K in keyof T]: T[K] extends { default: unknown } ? ValueOf<T[K]>
    : T[K]["kind"] extends "boolean" | "strings" ? ValueOf<T[K]>
    : ValueOf<T[K]> | undefined;
};

/** What {@linkcode parseCli} needs to know about a script. */
export interface CliSpec<T extends Record<string, OptionSpec>> {
  /** The script's name, as in `deno task NAME`. */
  name: string;
  /** One paragraph for the top of `--help`. */
  summary: string;
  /** The flags (`--help` is added). */
  options: T;
  /** The arguments to parse; defaults to `Deno.args`. */
  args?: string[];
}

const NUMERIC: readonly OptionKind[] = ["port", "integer", "seconds"];
/** A day: longer timeouts are surely typos, and timers past 2^31 ms (24.8 days) fire at once. */
const MAX_SECONDS = 86_400;
const MAX_INTEGER = 1_000_000_000;

function maxOf(o: OptionSpec): number | undefined {
  if (o.kind === "seconds") return o.max ?? MAX_SECONDS;
  if (o.kind === "integer") return o.max ?? MAX_INTEGER;
  return undefined;
}

/**
 * Seconds from a `--timeout`-style flag to milliseconds, where `0` means
 * "never" (`undefined`).
 *
 * @example
 * ```ts
 * import { secondsToMs } from "./cli.ts";
 * console.log(secondsToMs(2.5), secondsToMs(0)); // 2500 undefined
 * ```
 */
export function secondsToMs(seconds: number): number | undefined {
  return seconds > 0 ? Math.max(1, Math.round(seconds * 1000)) : undefined;
}

/**
 * Parses the flags of a script (see the module's example), or prints help
 * (exit 0) or a usage error (exit 2).
 */
export function parseCli<T extends Record<string, OptionSpec>>(
  spec: CliSpec<T>,
): Parsed<T> {
  const options: Record<string, OptionSpec> = {
    ...spec.options,
    help: { kind: "boolean", short: "h", help: "show this help and exit" },
  };
  const argv = joinNegativeNumbers(spec.args ?? Deno.args, options);
  let values: Record<string, unknown>;
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: Object.fromEntries(
        Object.entries(options).map(([name, o]) => [name, {
          type: o.kind === "boolean" ? "boolean" as const : "string" as const,
          multiple: o.kind === "strings",
          ...(o.short ? { short: o.short } : {}),
        }]),
      ),
    }).values;
  } catch (err) {
    usageError(spec.name, parseErrorMessage(err));
  }
  if (values.help) {
    console.log(helpText(spec.name, spec.summary, options));
    Deno.exit(0);
  }
  const out: Record<string, unknown> = {};
  for (const [name, o] of Object.entries(spec.options)) {
    const raw = values[name];
    if (raw === undefined) {
      out[name] = o.default ??
        (o.kind === "boolean" ? false : o.kind === "strings" ? [] : undefined);
    } else if (NUMERIC.includes(o.kind)) {
      out[name] = checkNumber(spec.name, name, o, raw as string);
    } else if (o.kind === "host" && (raw as string).trim() === "") {
      usageError(spec.name, `--${name} needs a host name or address`);
    } else {
      out[name] = o.kind === "host" ? stripBrackets(raw as string) : raw;
    }
  }
  return out as Parsed<T>;
}

/** Parses a port number, `0`-`65535`; returns `undefined` when it is not one. */
export function parsePort(text: string): number | undefined {
  if (!/^\d{1,5}$/.test(text.trim())) return undefined;
  const port = Number(text.trim());
  return port <= 65535 ? port : undefined;
}

function checkNumber(script: string, name: string, o: OptionSpec, raw: string): number {
  if (o.kind === "port") {
    const port = parsePort(raw);
    if (port === undefined) {
      usageError(script, `invalid --${name} '${raw}': expected a number from 0 to 65535`);
    }
    return port;
  }
  const pattern = o.kind === "integer" ? /^-?\d+$/ : /^-?(\d+\.?\d*|\.\d+)$/;
  const value = Number(raw);
  const min = o.min ?? 0;
  const max = maxOf(o)!;
  if (!pattern.test(raw.trim()) || !Number.isFinite(value) || value < min || value > max) {
    const what = o.kind === "integer" ? "a whole number" : "a number of seconds";
    usageError(script, `invalid --${name} '${raw}': expected ${what} from ${min} to ${max}`);
  }
  return value;
}

/** `--port -1` would be read as a missing value; treat it as `--port=-1`. */
function joinNegativeNumbers(args: string[], options: Record<string, OptionSpec>): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const flag = args[i];
    const name = flag.startsWith("--")
      ? flag.slice(2)
      : Object.keys(options).find((k) => `-${options[k].short}` === flag);
    const o = name === undefined ? undefined : options[name];
    if (o && NUMERIC.includes(o.kind) && /^-\d/.test(args[i + 1] ?? "")) {
      out.push(`--${name}=${args[++i]}`);
    } else {
      out.push(flag);
    }
  }
  return out;
}

function parseErrorMessage(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const message = String(e.message ?? err);
  const flag = message.match(/'(-[^']*)'/)?.[1] ?? "";
  switch (e.code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `unknown option ${flag}`;
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return `unexpected argument ${message.match(/'([^']*)'/)?.[1] ?? ""}`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      return message.includes("does not take")
        ? `option ${flag} takes no value`
        : `option ${flag.replace(/ <value>$/, "")} needs a value`;
    default:
      return message.split("\n")[0];
  }
}

function stripBrackets(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

function helpText(name: string, summary: string, options: Record<string, OptionSpec>): string {
  const rows = Object.entries(options).map(([flag, o]) => {
    const value = o.kind === "boolean" ? "" : ` ${o.valueName ?? defaultValueName(o.kind)}`;
    const left = `${o.short ? `-${o.short}, ` : "    "}--${flag}${value}`;
    const shown = Array.isArray(o.default) ? undefined : o.default;
    const notes = [
      ...(shown === undefined || shown === false ? [] : [`default ${shown}`]),
      ...(maxOf(o) === undefined ? [] : [`max ${maxOf(o)}`]),
    ];
    return `  ${left.padEnd(27)} ${o.help}${notes.length ? ` (${notes.join(", ")})` : ""}`;
  });
  // A file outside scripts/ (naive/ok_server) has no task of its own.
  const usage = name.includes("/")
    ? `${name}.ts [options]`
    : `${name} [options]    (in the project: deno task ${name} [options])`;
  return `${summary}\n\nUsage: ${usage}\n\nOptions:\n${rows.join("\n")}`;
}

function defaultValueName(kind: OptionKind): string {
  return { port: "PORT", host: "HOST", integer: "N", seconds: "SECONDS" }[kind as string] ??
    "TEXT";
}

/** Prints one line, `error: message (see NAME --help)`, on stderr, and exits 2. */
export function usageError(script: string, message: string): never {
  printError(`${message} (see ${script} --help)`);
  Deno.exit(2);
}

/**
 * Prints `error: message` on stderr (red on a terminal).
 *
 * @example
 * ```ts
 * import { printError } from "./cli.ts";
 * printError("port 8888 is already in use");
 * ```
 */
export function printError(message: string): void {
  const label = Deno.stderr.isTerminal() && !Deno.noColor
    ? styleText(["bold", "red"], "error:", { validateStream: false })
    : "error:";
  // One line, whatever the message quotes (a flag's value, a peer's bytes).
  console.error(`${label} ${showBytes(new TextEncoder().encode(message))}`);
}

/**
 * Runs a script's main function: any error it throws becomes one line
 * `error: ...` on stderr and exit code 1 (2 for a usage {@linkcode CliError}).
 *
 * @example
 * ```ts
 * import { runMain } from "./cli.ts";
 * await runMain(async () => {
 *   const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 *   console.log("listening on port", listener.addr.port);
 *   listener.close();
 * });
 * ```
 */
export async function runMain(main: () => Promise<void>): Promise<void> {
  try {
    await main();
    // Done: the last log lines (signals.ts's exit hooks), then exit even if
    // nobody reads them. 2 s: a server's main returns as Ctrl+C begins its
    // shutdown, which exits on its own by then.
    if (!(await runExitHooks(2000))) Deno.exit();
  } catch (err) {
    await runExitHooks(300); // what was logged before it, first
    printError(describeError(err));
    Deno.exit(err instanceof CliError ? err.exitCode : 1);
  }
}

/** A failure the user can fix; `runMain` prints its message only. */
export class CliError extends Error {
  /** The process exit code: 2 for bad usage, 1 for a runtime failure. */
  readonly exitCode: number;
  /** Builds an error printed as `error: message`. */
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = "CliError";
    this.exitCode = exitCode;
  }
}

const PICK_ANOTHER_PORT =
  "stop the other server, or pick another --port (--port 0 takes a free one)";

/**
 * What a client refused by `port` advises: `start it with deno task NAME`,
 * plus `--port N` unless `port` is that server's default, so that the server
 * it suggests is the one it will find.
 *
 * @example
 * ```ts
 * import { startHint } from "./cli.ts";
 * console.log(startHint("socket_server", 9000, 8888)); // start it with deno task socket_server --port 9000
 * ```
 */
export function startHint(server: string, port: number, defaultPort?: number): string {
  return `start it with deno task ${server}${port === defaultPort ? "" : ` --port ${port}`}`;
}

/**
 * Explains a failure in one line: what failed and what to try.
 *
 * @example
 * ```ts
 * import { describeError } from "./cli.ts";
 * import { ReadTimeoutError } from "./io.ts";
 * console.log(describeError(new ReadTimeoutError(2000), "127.0.0.1:8888"));
 * // no reply from 127.0.0.1:8888 within 2 s (--timeout)
 * ```
 */
export function describeError(err: unknown, target = ""): string {
  const at = target ? ` ${target}` : "";
  if (err instanceof CliError) return err.message;
  if (err instanceof Deno.errors.AddrInUse) {
    return `address${at} is already in use: ${PICK_ANOTHER_PORT}`;
  }
  if (err instanceof Deno.errors.AddrNotAvailable) {
    return `cannot use address${at}: it is not an address of this machine`;
  }
  if (err instanceof Deno.errors.ConnectionRefused) {
    return `connection refused${at ? ` by${at}` : ""}: is the server running?`;
  }
  if (err instanceof Deno.errors.ConnectionReset) return `connection reset by peer${at}`;
  // A connect attempt that timed out (ConnectTimeoutError, retry.ts) says it all.
  if (err instanceof Deno.errors.TimedOut && "target" in err) return err.message;
  if (err instanceof Deno.errors.TimedOut) return `timed out${at}`;
  if (err instanceof ReadTimeoutError) {
    return `no reply${at ? ` from${at}` : ""} within ${err.timeoutMs / 1000} s (--timeout)`;
  }
  if (err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied) {
    const message = firstLine(err);
    const flag = message.match(/--allow-\w+/)?.[0];
    const what = message.match(/access to "([^"]*)"/)?.[1];
    const hint = flag && what ? ` (run with ${flag}=${what.replace(/:\d+$/, "")})` : "";
    return `permission missing: ${message.split(",")[0]}${hint}`;
  }
  // An unknown host is a plain Error, not one of Deno.errors.
  if (
    /lookup address|not known|nodename nor servname|No address associated/i.test(firstLine(err))
  ) {
    return `cannot resolve host${at}: check the name, or the network`;
  }
  return `${firstLine(err)}${at ? ` (${target})` : ""}`;
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split("\n")[0];
}
