// Interop driver for @modelcontextprotocol/sdk 1.x (the TypeScript SDK, a 2025-11-25 client),
// through its public API: Client with StreamableHTTPClientTransport or StdioClientTransport.
// Plan on stdin, results on stdout: see _scenarios.mjs.
import { createRequire } from "node:module";
import { join } from "node:path";
import { installedVersion, main, readPlan, toolValue } from "./_scenarios.mjs";

const PACKAGE = "@modelcontextprotocol/sdk";

async function open(plan) {
  // The package is installed under .tools/, not beside this file: resolve it from there.
  const require = createRequire(join(plan.packages, "package.json"));
  const { Client } = require(`${PACKAGE}/client/index.js`);
  const { StreamableHTTPClientTransport } = require(`${PACKAGE}/client/streamableHttp.js`);
  const { StdioClientTransport } = require(`${PACKAGE}/client/stdio.js`);
  const transport = plan.target.url
    ? new StreamableHTTPClientTransport(new URL(plan.target.url))
    : new StdioClientTransport({
        command: plan.target.command,
        args: plan.target.args,
        env: { ...process.env, ...(plan.target.env ?? {}) },
        stderr: "ignore",
      });
  // Transport.setProtocolVersion (optional in the Transport interface) is how the Client
  // hands the negotiated version to its transport; record it on the way.
  let negotiated = null;
  const setProtocolVersion = transport.setProtocolVersion?.bind(transport);
  transport.setProtocolVersion = (version) => {
    negotiated = version;
    setProtocolVersion?.(version);
  };
  const client = new Client({ name: "interop-ts-sdk1", version: "0" });
  const options = { timeout: plan.timeout_ms };
  await client.connect(transport, options);
  return {
    protocol: () => negotiated,
    tools: async () => (await client.listTools(undefined, options)).tools.map((t) => t.name),
    call: async (name, args, meta) => {
      const params = meta ? { name, arguments: args, _meta: meta } : { name, arguments: args };
      return toolValue(await client.callTool(params, undefined, options));
    },
    close: () => client.close(),
  };
}

const plan = await readPlan();
await main(PACKAGE, installedVersion(plan.packages, PACKAGE), open, plan);
