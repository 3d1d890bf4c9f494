// Interop driver for @modelcontextprotocol/client 2.x (the TypeScript SDK v2), through its
// public API: Client with versionNegotiation {mode: "auto"} (server/discover first, 2026-07-28
// when the server offers it) over StreamableHTTPClientTransport or StdioClientTransport.
// Plan on stdin, results on stdout: see _scenarios.mjs.
import { createRequire } from "node:module";
import { join } from "node:path";
import { installedVersion, main, readPlan, toolValue } from "./_scenarios.mjs";

const PACKAGE = "@modelcontextprotocol/client";

async function open(plan) {
  // The package is installed under .tools/, not beside this file: resolve it from there.
  const require = createRequire(join(plan.packages, "package.json"));
  const { Client, StreamableHTTPClientTransport } = require(PACKAGE);
  const { StdioClientTransport } = require(`${PACKAGE}/stdio`);
  const transport = plan.target.url
    ? new StreamableHTTPClientTransport(new URL(plan.target.url))
    : new StdioClientTransport({
        command: plan.target.command,
        args: plan.target.args,
        env: { ...process.env, ...(plan.target.env ?? {}) },
        stderr: "ignore",
      });
  const client = new Client(
    { name: "interop-ts-client2", version: "0" },
    { versionNegotiation: { mode: "auto" } },
  );
  const options = { timeout: plan.timeout_ms };
  await client.connect(transport, options);
  return {
    protocol: () => client.getNegotiatedProtocolVersion() ?? null,
    tools: async () => (await client.listTools(undefined, options)).tools.map((t) => t.name),
    // User-supplied _meta keys ride along with the envelope the client attaches itself.
    call: async (name, args, meta) => {
      const params = meta ? { name, arguments: args, _meta: meta } : { name, arguments: args };
      return toolValue(await client.callTool(params, options));
    },
    close: () => client.close(),
  };
}

const plan = await readPlan();
await main(PACKAGE, installedVersion(plan.packages, PACKAGE), open, plan);
