// A Node.js client of the gigaudit gRPC API: proves the protos serve a non-Python client.
// Usage: node client.js <host:port> <protos dir> <googleapis include dir> <weights.safetensors> <operation name>
// Prints one JSON object with what it saw; exits non-zero on any unexpected error.
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [target, protoRoot, includeDir, weightsPath, operationName] = process.argv.slice(2);
const definition = protoLoader.loadSync(
  ["gigaudit/v1/model_service.proto", "gigaudit/v1/audit_service.proto", "google/longrunning/operations.proto"],
  { includeDirs: [protoRoot, includeDir], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
const api = grpc.loadPackageDefinition(definition);
const credentials = grpc.credentials.createInsecure();
const models = new api.gigaudit.v1.ModelService(target, credentials);
const audits = new api.gigaudit.v1.AuditService(target, credentials);
const operations = new api.google.longrunning.Operations(target, credentials);
const deadline = () => ({ deadline: Date.now() + 60000 });

function unary(client, method, request) {
  return new Promise((resolve, reject) =>
    client[method](request, deadline(), (err, response) => (err ? reject(err) : resolve(response))));
}

function upload(weights) {
  return new Promise((resolve, reject) => {
    const call = models.UploadModel(deadline(), (err, operation) => (err ? reject(err) : resolve(operation)));
    const model = {
      architecture: "partsnet", num_classes: 6, input_size: 32, mean: [0, 0, 0], std: [1, 1, 1],
      size_bytes: weights.length, sha256: crypto.createHash("sha256").update(weights).digest("hex"),
    };
    call.write({ header: { model_id: "from-node", model, request_id: "node-upload-1" } });
    for (let i = 0; i < weights.length; i += 64 * 1024) call.write({ chunk: weights.subarray(i, i + 64 * 1024) });
    call.end();
  });
}

function watch(name) {
  return new Promise((resolve, reject) => {
    let last = null, updates = 0;
    const stream = audits.WatchOperation({ name }, deadline());
    stream.on("data", (op) => { last = op; updates += 1; });
    stream.on("error", reject);
    stream.on("end", () => resolve({ last, updates }));
  });
}

async function main() {
  const out = {};
  const archs = await unary(models, "ListArchitectures", {});
  out.architectures = archs.architectures.map((a) => a.name);
  const validation = await upload(fs.readFileSync(weightsPath));  // an operation: a worker checks the weights
  out.validated = (await watch(validation.name)).last.done;
  const model = await unary(models, "GetModel", { name: "models/from-node" });
  out.model = { name: model.name, sha256: model.sha256, size_bytes: model.size_bytes };
  out.models = (await unary(models, "ListModels", { page_size: 100 })).models.map((m) => m.name);
  try {
    await unary(models, "GetModel", { name: "models/no-such-model" });
    out.missing = "found";
  } catch (err) {
    out.missing = { code: err.code, details: err.details, has_status_details: err.metadata.get("grpc-status-details-bin").length > 0 };
  }
  const op = await unary(operations, "GetOperation", { name: operationName });
  out.operation = { name: op.name, metadata_type: op.metadata && op.metadata.type_url };
  const watched = await watch(operationName);
  out.watched = { done: watched.last.done, result: watched.last.result, updates: watched.updates,
                  response_type: watched.last.response && watched.last.response.type_url };
  console.log(JSON.stringify(out));
}

main().catch((err) => { console.error("node client failed:", err.code, err.details || err.message); process.exit(1); });
