/**
 * The lib's layers, as CONTRIBUTING.md's Layout section lists them: a module
 * imports only from modules listed above it, so nothing imports upward (io.ts,
 * the exact reads and writes, depends on nothing but text.ts) and each part
 * can be read, and copied, with only what sits above it.
 */
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url);

/** The lib modules in the order CONTRIBUTING.md's Layout section lists them. */
function layerOrder(): string[] {
  const text = Deno.readTextFileSync(new URL("CONTRIBUTING.md", ROOT));
  const start = text.indexOf("\n## Layout\n");
  assert.ok(start >= 0, "CONTRIBUTING.md has no '## Layout' section");
  const end = text.indexOf("\n## ", start + 1);
  const layout = text.slice(start, end < 0 ? undefined : end);
  return [...layout.matchAll(/`lib\/(\w+)\.ts`/g)].map((m) => m[1])
    .filter((name, i, all) => all.indexOf(name) === i);
}

Deno.test("every lib module is in CONTRIBUTING.md's layers, and imports only from the layers above it", () => {
  const order = layerOrder();
  const modules = [...Deno.readDirSync(new URL("lib", ROOT))]
    .map((e) => e.name.replace(/\.ts$/, ""));
  for (const name of modules) {
    assert.ok(order.includes(name), `lib/${name}.ts is not in CONTRIBUTING.md's Layout`);
  }
  const upward: string[] = [];
  for (const name of modules) {
    const source = Deno.readTextFileSync(new URL(`lib/${name}.ts`, ROOT));
    // Real imports only: the doc comments' examples import the module itself.
    const code = source.replace(/\/\*\*[\s\S]*?\*\//g, "");
    for (const m of code.matchAll(/from "\.\/(\w+)\.ts"/g)) {
      if (order.indexOf(m[1]) >= order.indexOf(name)) {
        upward.push(`lib/${name}.ts imports ${m[1]}.ts`);
      }
    }
  }
  assert.deepEqual(upward, []);
});
