// Parse each Mermaid file named on the command line with the real Mermaid parser.
// Prints "ok <file>" or "FAIL <file> <reason>" per file; exits 1 if any failed.
import { readFileSync } from "node:fs";
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import("mermaid");

let failed = 0;
for (const file of process.argv.slice(2)) {
  try {
    await mermaid.parse(readFileSync(file, "utf8"));
    console.log(`ok ${file}`);
  } catch (error) {
    failed += 1;
    console.log(`FAIL ${file} ${String(error.message || error).replace(/\n/g, " | ")}`);
  }
}
process.exit(failed ? 1 : 0);
