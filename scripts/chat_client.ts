/**
 * chat_client.ts — joins the chat room of scripts/chat_server.ts: the lines
 * you type go to the room, and the room's lines print as they arrive.
 *
 * Both happen at once, which is the lesson here: a TCP connection is full
 * duplex, so the client runs two loops on one socket, standard input to the
 * socket and the socket to standard output, and neither waits for the other.
 * (A client that sent a line and then waited for "the reply" would sit deaf
 * while you type, and mute while the room talks.) Both are in plain view
 * below: `Deno.connect` (which `connectWithRetry` calls again while the
 * server starts, each attempt within `--timeout`), then loop 1 (`writeAll`
 * of each line you type) and loop 2 (a `LineReader` on the connection, whole
 * lines however they arrive), then `conn.close()`.
 *
 * The server asks `* name?` first: `--name` answers it, else the first line
 * you type is your name. The room's lines are printed with control bytes
 * escaped (`\x1b`, `\r`), so nobody in the room can drive your terminal.
 * End of input (Ctrl+D) half-closes the connection (`conn.closeWrite()`):
 * "nothing more from me", but still listening; the server announces that you
 * left, sends what it still owes, and closes; the client then exits 0.
 * Ctrl+C leaves at once (exit 0). If the server closes first (it stopped, or
 * dropped you), the client says so in an `error:` line and exits 1. Either
 * way it prints how many lines it sent and received, on stderr. A line the
 * server cut off (the connection ended before its newline) is not printed as
 * a line of the room nor counted: the `error:` line shows its bytes, escaped.
 * `--name` must be one line (a line break in it is a usage error, exit 2).
 *
 * On a terminal, what you type stays intact while the room talks. A terminal
 * in its normal ("cooked") mode echoes your keys itself and hands the program
 * only whole lines, so the program cannot know what is half typed, and a room
 * line printed meanwhile lands inside it (`typing half a libob: hi`). So when
 * standard input and output are both a terminal, the client switches it to
 * raw mode (`Deno.stdin.setRaw`), gets each key as it is pressed and keeps
 * the line itself (`LineEditor`, below): after a `> ` prompt it echoes what
 * you type (any UTF-8), Backspace deletes a character, Ctrl+U the line, Enter
 * sends it; Ctrl+D on an empty line and Ctrl+C leave as above; other control
 * keys and escape sequences (arrow keys) are ignored. A room line is printed
 * by clearing your line (`\r` and `\x1b[K`), printing the room line, and
 * drawing the prompt and your text again. The terminal is set back to normal
 * on every way out. (A line wider than the terminal is not redrawn cleanly:
 * the editor stays small.) From a pipe or a file, or with output to one, the
 * client reads lines as they come and prints no escape sequence.
 *
 * Run (start scripts/chat_server.ts first):
 *   deno run --allow-net='127.0.0.1,[::1],localhost' scripts/chat_client.ts --name alice
 *   deno task chat_client --name alice       (same thing)
 * Expected output (nothing typed, so alice joins and leaves):
 *   * name?
 *   * welcome alice; nobody else is here
 *
 * Without `--name`, the first line is the name:
 *   $ printf 'bob\nhello, room\n' | deno task chat_client
 *   * name?
 *   * welcome bob; nobody else is here
 *
 * Chat by hand from two terminals, as alice in one and bob in the other:
 *   $ deno task chat_client --name bob
 *
 * @module
 */

import { parseCli, runMain, secondsToMs, startHint, usageError } from "../lib/cli.ts";
import { ATTEMPTS_FLAG, connectWithRetry, reportAttempt } from "../lib/retry.ts";
import {
  closeQuietly,
  concatBytes,
  LineReader,
  LineTooLongError,
  TruncatedLineError,
  writeAll,
} from "../lib/io.ts";
import { formatAddress, paint, showBytes } from "../lib/text.ts";
import { TRACE_FLAG, traceConn } from "../lib/trace.ts";

const args = parseCli({
  name: "chat_client",
  summary: "Joins the chat room: your lines go out, the room's lines print as they arrive.",
  options: {
    host: { kind: "host", default: "127.0.0.1", help: "server to connect to" },
    port: { kind: "port", short: "p", default: 8890, help: "server's TCP port" },
    name: { kind: "string", short: "n", help: "your name; default: the first line you type" },
    attempts: ATTEMPTS_FLAG,
    timeout: {
      kind: "seconds",
      default: 10,
      help: "each connect attempt waits at most this long (0: never)",
    },
    trace: TRACE_FLAG,
  },
});

const encoder = new TextEncoder();
const NEWLINE = encoder.encode("\n");

// A name is one line: a line break in it would send a second line to the room.
if (args.name !== undefined && /[\r\n]/.test(args.name)) {
  usageError(
    "chat_client",
    `--name must be one line: '${showBytes(encoder.encode(args.name))}' holds a line break`,
  );
}

const status = (text: string) => console.error(paint("dim", text, "stderr"));
let sent = 0;
let received = 0;
const summary = () => status(`sent ${sent} line(s), received ${received} line(s)`);

/** A typed line holds at most 64 KiB, as a piped one does (a character is up to 4 bytes). */
const MAX_TYPED = (64 * 1024) / 4;

/**
 * The line being typed on a raw terminal, kept by the program (see the top
 * comment): keys come in one by one, are echoed or acted on, and a room line
 * is printed above the line being typed, which is then drawn again.
 */
class LineEditor {
  readonly prompt = "> ";
  #typed: string[] = []; // the characters typed so far, one per item
  #escape = ""; // inside an escape sequence: "\x1b", then "[" or "O"
  #active = false;

  /** Raw mode on, and the prompt. */
  start(): void {
    Deno.stdin.setRaw(true);
    this.#active = true;
    this.#write(this.prompt);
  }

  /** Clears the input line and sets the terminal back to normal; twice is harmless. */
  stop(): void {
    if (!this.#active) return;
    this.#active = false;
    this.#write("\r\x1b[K");
    Deno.stdin.setRaw(false);
  }

  /** Prints a line of the room above the one being typed. */
  print(text: string): void {
    if (!this.#active) return console.log(text);
    this.#write(`\r\x1b[K${text}\r\n${this.prompt}${this.#typed.join("")}`);
  }

  /** Each line, as Enter is pressed; ends at Ctrl+D on an empty line. */
  async *lines(onCtrlC: () => void): AsyncGenerator<Uint8Array> {
    const keys = new Uint8Array(1024);
    const utf8 = new TextDecoder(); // { stream: true } below: a character may come in two reads
    while (true) {
      const n = await Deno.stdin.read(keys);
      if (n === null) return;
      for (const char of utf8.decode(keys.subarray(0, n), { stream: true })) {
        const key = this.#key(char);
        if (key === "Ctrl+C") onCtrlC();
        if (key === "Ctrl+D") return;
        if (key === "Enter") {
          const line = this.#typed.join("");
          this.#typed = [];
          this.#write(`\r\n${this.prompt}`);
          yield encoder.encode(line);
        }
      }
    }
  }

  /** Edits the line with one key; returns what the caller acts on. */
  #key(char: string): "Enter" | "Ctrl+C" | "Ctrl+D" | undefined {
    const code = char.codePointAt(0)!;
    // Keys such as arrows send ESC [ ... final letter, or ESC O letter; Alt+x sends ESC x.
    // All are skipped whole, so no part of them lands in the line.
    if (this.#escape === "\x1b") {
      this.#escape = char === "[" || char === "O" ? char : "";
      return;
    }
    if (this.#escape) {
      if (this.#escape === "O" || (code >= 0x40 && code <= 0x7e)) this.#escape = "";
      return;
    }
    if (char === "\r" || char === "\n") return "Enter";
    if (char === "\x03") return "Ctrl+C";
    if (char === "\x04") return this.#typed.length === 0 ? "Ctrl+D" : undefined;
    if (char === "\x1b") this.#escape = char;
    else if (char === "\x7f" || char === "\b") this.#redraw(this.#typed.slice(0, -1));
    else if (char === "\x15") this.#redraw([]); // Ctrl+U
    else if (code < 0x20 || (code >= 0x7f && code < 0xa0)) return; // other control keys
    else if (this.#typed.length >= MAX_TYPED) this.#write("\x07"); // the line is full: a bell
    else {
      this.#typed.push(char);
      this.#write(char);
    }
  }

  #redraw(typed: string[]): void {
    this.#typed = typed;
    this.#write(`\r\x1b[K${this.prompt}${typed.join("")}`);
  }

  #write(text: string): void {
    const bytes = encoder.encode(text);
    for (let at = 0; at < bytes.length;) at += Deno.stdout.writeSync(bytes.subarray(at));
  }
}

// The editor only where a person types into a terminal and watches it.
const editor = Deno.stdin.isTerminal() && Deno.stdout.isTerminal() ? new LineEditor() : undefined;

/** One line from the room, made safe for the terminal; notices dim, errors red. */
function show(line: Uint8Array): void {
  const text = showBytes(line);
  const styled = text.startsWith("* ")
    ? paint("dim", text)
    : text.startsWith("ERR ")
    ? paint("red", text)
    : text;
  if (editor) editor.print(styled);
  else console.log(styled);
  received++;
}

await runMain(async () => {
  // Connect, retrying while the server starts (a refusal may be gone in a moment).
  const conn = await connectWithRetry({
    connect: ({ signal }) => Deno.connect({ hostname: args.host, port: args.port, signal }),
    hostname: args.host, // (for the error lines)
    port: args.port,
    attempts: args.attempts,
    // Each attempt within --timeout (`signal`; 0: never).
    connectTimeoutMs: secondsToMs(args.timeout) ?? 0,
    hint: startHint("chat_server", args.port, 8890),
    onRetry: reportAttempt(args.attempts), // "attempt 1/5 failed: ...; retrying in N ms" (stderr)
  });
  if (args.trace) traceConn(conn); // --trace: print every read and write on it
  conn.setNoDelay(true); // each line you type goes out at once, not held back by Nagle
  status(`connected to ${formatAddress(conn.remoteAddr)}; Ctrl+D leaves`);
  // Ctrl+C: leave at once. Signals would keep the process alive, so exit here.
  // (On a raw terminal Ctrl+C is a key, not a signal: the editor calls this.)
  const leave = () => {
    editor?.stop();
    closeQuietly(conn);
    summary();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", leave);
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", leave);

  // Loop 1, standard input to the socket. Not awaited: it runs beside loop 2.
  let leaving = false;
  const typing = (async () => {
    if (args.name !== undefined) await writeAll(conn, encoder.encode(`${args.name}\n`));
    editor?.start();
    for await (const line of editor ? editor.lines(leave) : new LineReader(Deno.stdin)) {
      // One write per line, its newline included; writeAll, since write() may send less.
      await writeAll(conn, concatBytes([line, NEWLINE]));
      sent++;
    }
    editor?.stop(); // Ctrl+D: the terminal is normal again while the room finishes
    leaving = true;
    await conn.closeWrite(); // end of input: nothing more from us, but keep listening
  })();
  let badInput: Error | undefined;
  typing.catch((err) => {
    // A failed write means the server went, which loop 2 sees too; a line of
    // input too long to be a chat line ends the client (closing ends loop 2).
    if (err instanceof LineTooLongError) {
      badInput = new Error(`an input line is longer than ${err.maxLine} bytes`);
      closeQuietly(conn);
    }
  });

  // Loop 2, the socket to standard output, until the server closes. The room's
  // lines come in pieces or many at once: LineReader hands them out whole.
  // requireNewline: bytes the server cut off are not a line of the room.
  try {
    for await (const line of new LineReader(conn, { maxLine: 1 << 20, requireNewline: true })) {
      show(line);
    }
  } catch (err) {
    if (badInput) throw badInput;
    if (!(err instanceof TruncatedLineError)) throw err;
    // Bytes after the last newline are not a line the room sent: name them, don't count them.
    throw new Error(
      `the server closed the connection in the middle of a line: ` +
        `'${showBytes(err.partial)}' was cut off (no newline)`,
    );
  } finally {
    editor?.stop();
    try {
      conn.close();
    } catch {
      // Closed already: by Ctrl+C, or by a too-long input line, to end this loop.
    }
    summary();
  }
  if (!leaving) throw new Error("the server closed the connection");
  Deno.exit(0); // standard input may still be waited on: we are done
});
