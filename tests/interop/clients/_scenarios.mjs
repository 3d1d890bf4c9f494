// The interop scenarios, shared by the TypeScript client drivers (ts_sdk1.mjs, ts_client2.mjs).
// A driver reads a plan (JSON on stdin, written by tests/interop/test_matrix.py), opens
// connections with its client library's public API only, and prints one JSON object:
//   {"client", "version", "protocol", "results": {scenario: {"value": …} | {"error": "…"}}}
// The Python drivers (_scenarios.py) follow the same plan and print the same shape.

import { readFileSync } from "node:fs";
import { join } from "node:path";

export const SESSION_META_KEY = "dev.mcpsessions/sessionId";

export async function readPlan() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

// The tool's value: structuredContent.result (a wrapped scalar or list) or the object itself.
export function toolValue(result) {
  if (result.isError) {
    const text = (result.content ?? []).map((block) => block.text ?? "").join(" ");
    throw new Error(`tool error: ${text}`);
  }
  const content = result.structuredContent;
  if (content && typeof content === "object") {
    const keys = Object.keys(content);
    return keys.length === 1 && keys[0] === "result" ? content.result : content;
  }
  const text = (result.content ?? []).map((block) => block.text ?? "").join("");
  return JSON.parse(text);
}

async function attempt(results, name, body) {
  try {
    results[name] = { value: await body() };
  } catch (error) {
    results[name] = { error: String(error?.message ?? error) };
  }
}

// open(): a connection {protocol, tools(), call(name, args, meta), close()}.
export async function runPlan(plan, open) {
  const results = {};
  const meta = (key) => (plan.carrier === "meta" ? { [SESSION_META_KEY]: plan.ids[key] } : undefined);
  let protocol = null;
  let first = null;
  await attempt(results, "connect", async () => {
    first = await open();
    protocol = first.protocol();
    return await first.tools();
  });
  if (first === null) return { protocol, results };
  try {
    await attempt(results, "count", async () => {
      const values = [];
      for (let i = 0; i < 3; i++) values.push(await first.call("count", {}, meta("count")));
      return values;
    });
    await attempt(results, "second_client", async () => {
      const second = await open();
      try {
        return [await second.call("count", {}, meta("second"))];
      } finally {
        await second.close().catch(() => {});
      }
    });
    await attempt(results, "parallel", async () => {
      const third = await open();
      try {
        const calls = Array.from({ length: plan.parallel }, () =>
          third.call("count", {}, meta("parallel")),
        );
        return await Promise.all(calls);
      } finally {
        await third.close().catch(() => {});
      }
    });
    // The handle flow passes arguments only: no carrier of ours in _meta.
    await attempt(results, "handle_count", async () => {
      const handle = await first.call("session_start", {});
      const values = [];
      for (let i = 0; i < 3; i++) values.push(await first.call("count", { session: handle }));
      return values;
    });
    await attempt(results, "handle_vm", async () => {
      const vm = await first.call("init_vm", { name: "interop" });
      await first.call("set_ram", { vm, gb: 8 });
      const state = await first.call("set_cpu", { vm, n: 4 });
      return { ram_gb: state.ram_gb, cpus: state.cpus };
    });
    if (plan.no_carrier) {
      // A plain call with no session at all: the error a client that knows nothing sees.
      await attempt(results, "no_carrier", async () => first.call("count", {}));
    }
  } finally {
    // A connection that fails to close has still given its answers.
    await first.close().catch(() => {});
  }
  return { protocol, results };
}

export function installedVersion(packages, name) {
  const manifest = join(packages, "node_modules", name, "package.json");
  return JSON.parse(readFileSync(manifest, "utf8")).version;
}

export async function main(client, version, open, plan) {
  const { protocol, results } = await runPlan(plan, () => open(plan));
  process.stdout.write(JSON.stringify({ client, version, protocol, results }) + "\n");
  process.exit(0);
}
