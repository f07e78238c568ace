/**
 * Copying a script, as the README says: its table lists, for each script, the one command that
 * copies it and the lib files it needs. Here the table is checked against the scripts' imports
 * (`deno info`, in `copy_table.ts`), and each command is run as shown: the copy must run, and
 * the script with only its listed lib files must type-check.
 */
import assert from "node:assert/strict";
import { APP, type CopyRow, copyRows, readmeRows, renderTable, ROOT_URL } from "./copy_table.ts";

const README = Deno.readTextFileSync(new URL("README.md", ROOT_URL));
const ROOT = ROOT_URL.pathname;

/** Runs `command` in `sh` from `cwd`; fails with its output unless it exits 0. */
async function sh(command: string, cwd: string): Promise<void> {
  const out = await new Deno.Command("sh", {
    args: ["-c", command],
    cwd,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  assert.equal(
    out.code,
    0,
    `'${command}' in ${cwd} exited ${out.code}\n--- stdout\n${text(out.stdout)}--- stderr\n${
      text(out.stderr)
    }`,
  );
}

let computed: Promise<CopyRow[]> | undefined;
const rows = () => computed ??= copyRows();

Deno.test("README: the copy table lists each script's command and exactly the lib files it imports", async () => {
  const expected = await rows();
  const shown = readmeRows(README);
  try {
    assert.deepEqual(shown, expected);
  } catch (err) {
    console.log(
      `README's copy table is out of date. Run 'deno task copy-table', or paste this between ` +
        `its markers (then 'deno fmt README.md'):\n\n${renderTable(expected)}\n`,
    );
    throw err;
  }
});

Deno.test("README: each copy command, run as shown, copies a script that runs; the listed lib files are enough", async () => {
  const dir = await Deno.makeTempDir({ prefix: "copy-test-" });
  try {
    // The project's scripts/ and lib/ as a reader has them (and nothing else: no deno.json).
    await sh(`cp -r '${ROOT}scripts' '${ROOT}lib' '${dir}/'`, ROOT);
    const minimal: string[] = [];
    for (const row of readmeRows(README)) {
      // The README's command, exactly, then the script from its new place.
      await sh(row.command, dir);
      await sh(`deno run -A ${APP}/scripts/${row.script}.ts --help > /dev/null`, dir);
      await Deno.remove(`${dir}/${APP}`, { recursive: true });
      // Only the lib files the table lists, beside what the command copies from scripts/.
      const only = `${dir}/only_${row.script}`;
      await sh(row.command.replace(/ && cp -r lib \S+$/, ""), dir);
      await Deno.rename(`${dir}/${APP}`, only);
      await Deno.mkdir(`${only}/lib`);
      for (const file of row.lib) await Deno.copyFile(`${ROOT}lib/${file}`, `${only}/lib/${file}`);
      minimal.push(`only_${row.script}/scripts/${row.script}.ts`);
    }
    assert.ok(minimal.length > 0, "README has no copy table");
    await sh(`deno check --quiet ${minimal.join(" ")}`, dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
