import { OPCUA_PROCESS_ARG } from "../protocols/opcua/process-protocol";

if (process.argv[2] === OPCUA_PROCESS_ARG) {
  // The daemon's OPC UA process (agent/opcua-process.ts): no CLI and no core are loaded in it.
  void import("./opcua-child").then((m) => m.runOpcuaProcess());
} else {
  // Every command's action resolves when its work is done (`run` and `soc receive` when they
  // are stopped); then the process exits, whatever handles a failed component left open.
  void import("./cli").then(({ runCli }) =>
    runCli(process.argv).finally(() => {
      process.stdout.write("", () => process.exit());
    }),
  );
}
