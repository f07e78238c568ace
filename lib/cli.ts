/**
 * The command line every script shares: flags, `--help` (exit 0), one-line `error:` messages
 * instead of stack traces (exit 2 for bad usage, 1 at run time), and the hooks an exit runs first
 * ({@linkcode beforeExit}: log.ts flushes its queue there), run by `runMain` and signals.ts.
 *
 * @example
 * ```ts
 * import { parseCli } from "./cli.ts";
 * const options = { port: { kind: "port", short: "p", default: 8888, help: "TCP port" } } as const;
 * console.log(parseCli({ name: "hi", summary: "Says hi.", options, args: ["-p", "9"] }).port); // 9
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { paint, showBytes } from "./text.ts";
import { ReadTimeoutError } from "./io.ts";

/** How a flag's value is read: as text, a switch, a host, or a number ({@linkcode NumericKind}). */
export type OptionKind = "string" | "strings" | "boolean" | "host" | NumericKind;
/** `port` 0-65535, `integer` whole, `seconds` and `number` decimal. */
export type NumericKind = "port" | "integer" | "seconds" | "number";

/** One flag of a script. */
export interface OptionSpec {
  /** How the value is read and checked. */
  kind: OptionKind;
  /** One-letter alias, e.g. `p` for `-p`. */
  short?: string;
  /** Used when the flag is absent. */
  default?: string | number | boolean | string[];
  /** One line for `--help`. */
  help: string;
  /** Smallest `integer`, `seconds` or `number` (default 0). */
  min?: number;
  /** Largest `integer`, `seconds` or `number`, shown in `--help` (default 1e9, or a day). */
  max?: number;
  /** Name of the value in `--help`, e.g. `N`. */
  valueName?: string;
}

/** The parsed flags: a flag without a default may be `undefined`. */
export type Parsed<T extends Record<string, OptionSpec>> = {
  [K in keyof T]: T[K]["kind"] extends "boolean" ? boolean
    : T[K]["kind"] extends "strings" ? string[]
    : T[K] extends { default: unknown } ? (T[K]["kind"] extends "string" | "host" ? string : number)
    : (T[K]["kind"] extends "string" | "host" ? string : number) | undefined;
};

/** A script's `name` (`deno task NAME`), summary, flags, `args`, `operands` (`FILE...`) if any. */
export type CliSpec<T> = {
  name: string;
  summary: string;
  options: T;
  args?: string[];
  operands?: string;
};

// [pattern, what an error expects, max]. Over a day is a typo; timers past 2^31 ms fire at once.
const NUMERIC: Record<string, [RegExp, string, number]> = {
  port: [/^\d{1,5}$/, "a number", 65535],
  integer: [/^-?\d+$/, "a whole number", 1_000_000_000],
  seconds: [/^-?(\d+\.?\d*|\.\d+)$/, "a number of seconds", 86_400],
  number: [/^-?(\d+\.?\d*|\.\d+)$/, "a number", 1_000_000_000],
};

/** Seconds from a `--timeout`-style flag to milliseconds; `0` means never (`undefined`). */
export const secondsToMs = (seconds: number): number | undefined =>
  seconds > 0 ? Math.max(1, Math.round(seconds * 1000)) : undefined;

/** Parses a script's flags (see the module's example), or prints help (exit 0) or an error (2). */
export function parseCli<T extends Record<string, OptionSpec>>(
  spec: CliSpec<T>,
): Parsed<T> & { operands?: string[] } {
  const fail: (message: string) => never = (message) => usageError(spec.name, message);
  const help: OptionSpec = { kind: "boolean", short: "h", help: "show this help and exit" };
  const flags: [string, OptionSpec][] = Object.entries({ ...spec.options, help });
  const options = Object.fromEntries(flags.map(([name, { kind, short }]) => {
    const type = kind === "boolean" ? "boolean" as const : "string" as const;
    return [name, { type, multiple: kind === "strings", ...(short && { short }) }];
  }));
  // Checked below, not by `strict`, which takes the value in `--port -1` for another flag.
  const parsed = parseArgs({ args: spec.args ?? Deno.args, options, strict: false, tokens: true });
  for (const t of parsed.tokens) {
    if (t.kind === "positional" && !spec.operands) fail(`unexpected argument ${t.value}`);
    if (t.kind !== "option") continue;
    const o = flags.find(([name]) => name === t.name)?.[1] ?? fail(`unknown option ${t.rawName}`);
    if (o.kind === "boolean") {
      if (t.value !== undefined) fail(`option ${t.rawName} takes no value`);
      continue;
    }
    // `--port --trace` took "--trace" as the port; `--port -1` is a (bad) number, checked below.
    const looksLikeFlag = NUMERIC[o.kind] ? /^-[^\d.]/ : /^-./s;
    if (t.value === undefined || (!t.inlineValue && looksLikeFlag.test(t.value))) {
      fail(`option ${t.rawName} needs a value`);
    }
  }
  if (parsed.values.help) showHelp(spec, flags);
  const out: Record<string, unknown> = spec.operands ? { operands: parsed.positionals } : {};
  for (const [name, o] of Object.entries(spec.options)) {
    const raw = parsed.values[name] as string | undefined;
    out[name] = o.default ?? (o.kind === "boolean" ? false : o.kind === "strings" ? [] : undefined);
    if (raw === undefined) continue;
    if (NUMERIC[o.kind]) {
      out[name] = checkNumber(spec.name, name, o, raw);
    } else if (o.kind === "host") {
      out[name] = raw.replace(/^\[(.*)\]$/s, "$1"); // [::1] is ::1
      if (!(out[name] as string).trim()) fail(`--${name} needs a host name or address`);
    } else {
      out[name] = raw;
    }
  }
  return out as Parsed<T> & { operands?: string[] };
}

/** The number in `raw`, or a usage error that says what was expected. */
function checkNumber(script: string, name: string, o: OptionSpec, raw: string): number {
  const [pattern, what, top] = NUMERIC[o.kind];
  const { min = 0, max = top } = o.kind === "port" ? {} : o; // a port's bounds are fixed
  const value = Number(raw);
  if (!pattern.test(raw.trim()) || !(value >= min && value <= max)) {
    usageError(script, `invalid --${name} '${raw}': expected ${what} from ${min} to ${max}`);
  }
  return value;
}

/** Parses a port number, `0`-`65535`; returns `undefined` when it is not one. */
export const parsePort = (text: string): number | undefined =>
  /^\d{1,5}$/.test(text.trim()) && Number(text) <= 65535 ? Number(text) : undefined;

function showHelp(spec: CliSpec<unknown>, flags: [string, OptionSpec][]): never {
  const rows = flags.map(([flag, o]) => {
    const type = o.kind === "integer" ? "N" : /string/.test(o.kind) ? "TEXT" : o.kind.toUpperCase();
    const left = `${o.short ? `-${o.short}, ` : "    "}--${flag}`;
    const value = o.kind === "boolean" ? "" : ` ${o.valueName ?? type}`;
    const shown = o.default === false || Array.isArray(o.default) ? undefined : o.default;
    const max = o.kind === "port" ? undefined : o.max ?? NUMERIC[o.kind]?.[2];
    const notes = [shown !== undefined && `default ${shown}`, max !== undefined && `max ${max}`];
    const note = notes.some(Boolean) ? ` (${notes.filter(Boolean).join(", ")})` : "";
    return `  ${(left + value).padEnd(27)} ${o.help}${note}`;
  });
  const { name, summary, operands: o } = spec;
  const operands = o ? ` ${o}` : ""; // FILE...
  const usage = name.includes("/") // a file outside scripts/ (naive/ok_server) has no task
    ? `${name}.ts [options]`
    : `${name} [options]${operands}    (in the project: deno task ${name} [options]${operands})`;
  console.log(`${summary}\n\nUsage: ${usage}\n\nOptions:\n${rows.join("\n")}`);
  Deno.exit(0);
}

/** Prints one line, `error: message (see NAME --help)`, on stderr, and exits 2. */
export function usageError(script: string, message: string): never {
  printError(`${message} (see ${script} --help)`);
  Deno.exit(2);
}

/** `error: message` on stderr, escaped to one line (escapes kept); red `error:` at a terminal. */
export function printError(message: string): void {
  const label = paint(["bold", "red"], "error:", "stderr");
  console.error(`${label} ${showBytes(new TextEncoder().encode(message), Infinity, false)}`);
}

/** Runs `main`; a thrown error becomes one `error:` line and exit 1 (or the CliError's code). */
export async function runMain(main: () => Promise<void>): Promise<void> {
  try {
    await main();
    if (!(await runExitHooks(2000))) Deno.exit(); // flush the log; exit if it hangs (unread pipe)
  } catch (err) {
    await runExitHooks(300); // what was logged before it, first
    printError(describeError(err));
    Deno.exit(err instanceof CliError ? err.exitCode : 1);
  }
}

const exitHooks: ((ms: number) => Promise<unknown>)[] = [];

/** Registers `hook(ms it may take)`, run as `runMain` or `exitSoon` exits; `Deno.exit` skips it. */
export function beforeExit(hook: (ms: number) => Promise<unknown>): void {
  exitHooks.push(hook);
}

/** Runs the `beforeExit` hooks for `ms` at most; true if they all finished. */
export async function runExitHooks(ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const done = await Promise.race([
    Promise.all(exitHooks.map((hook) => hook(ms))).then(() => true),
    new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), Math.max(0, ms))),
  ]);
  clearTimeout(timer);
  return done;
}

/** A failure the user can fix; `runMain` prints its message only. */
export class CliError extends Error {
  /** Builds an error printed as `error: message`; `exitCode` is 2 for bad usage, 1 at run time. */
  constructor(message: string, readonly exitCode: number = 1) {
    super(message);
    this.name = "CliError";
  }
}

/** `start it with deno task NAME`, plus `--port N` unless `port` is that server's default. */
export const startHint = (server: string, port: number, defaultPort?: number): string =>
  `start it with deno task ${server}${port === defaultPort ? "" : ` --port ${port}`}`;

/** Explains a failure in one line: what failed (at `target`, e.g. `HOST:PORT`), what to try. */
export function describeError(err: unknown, target = ""): string {
  const at = target && ` ${target}`;
  const first = (err instanceof Error ? err.message : String(err)).split("\n")[0];
  const e = Deno.errors;
  // A timed-out connect (ConnectTimeoutError, retry.ts) names its target and flag already.
  if (err instanceof CliError || (err instanceof e.TimedOut && "target" in err)) return err.message;
  if (err instanceof e.AddrInUse) {
    return `address${at} is already in use: stop the other server, or pick another --port ` +
      "(--port 0 takes a free one)";
  }
  if (err instanceof e.AddrNotAvailable) {
    return `cannot use address${at}: it is not an address of this machine`;
  }
  if (err instanceof e.ConnectionRefused) {
    return `connection refused${at && ` by${at}`}: is the server running?`;
  }
  if (err instanceof e.ConnectionReset) return `connection reset by peer${at}`;
  if (err instanceof e.TimedOut) return `timed out${at}`;
  if (err instanceof ReadTimeoutError) {
    return `no reply${at && ` from${at}`} within ${err.timeoutMs / 1000} s (--timeout)`;
  }
  if (err instanceof e.NotCapable || err instanceof e.PermissionDenied) {
    const [, what, flag] = first.match(/access to "(.+?)(?::\d+)?".*?(--allow-\w+)/) ?? [];
    return `permission missing: ${first.split(",")[0]}${flag ? ` (run with ${flag}=${what})` : ""}`;
  }
  // An unknown host is a plain Error, not one of Deno.errors.
  if (/lookup address|not known|nodename nor servname|No address associated/i.test(first)) {
    return `cannot resolve host${at}: check the name, or the network`;
  }
  return `${first}${at && ` (${target})`}`;
}
