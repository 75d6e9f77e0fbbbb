// Validate a glTF/GLB/VRM file with the Khronos glTF validator (npm gltf-validator) and print
// its report as JSON on stdout. Usage: node gltf_validate.cjs FILE [NODE_MODULES]
const fs = require("fs");
const path = require("path");
const file = process.argv[2];
const modules = process.argv[3] || path.join(__dirname, "..", "..", "node_modules");
const validator = require(path.join(modules, "gltf-validator"));
const bytes = new Uint8Array(fs.readFileSync(file));
validator
  .validateBytes(bytes, { maxIssues: 200, uri: path.basename(file) })
  .then((report) => {
    process.stdout.write(JSON.stringify(report));
  })
  .catch((err) => {
    process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
    process.exit(1);
  });
