/** An OPC UA point's source (`points.<id>.source.opcua`): the server and the node read for it. */
import { z } from "zod";
import { nodeIdSchema } from "./config";

export const opcuaSourceSchema = z.strictObject({
  /** OPC UA server name as configured in `opcua.servers`. */
  server: z.string().min(1),
  node_id: nodeIdSchema,
  scale: z.number().finite().default(1),
  offset: z.number().finite().default(0),
});

export type OpcuaSource = z.infer<typeof opcuaSourceSchema>;
