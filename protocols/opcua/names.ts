/** Names shared by the OPC UA client and front configs: security policies and node ids. */
import { z } from "zod";

export const SECURITY_POLICIES = ["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"] as const;

/**
 * An OPC UA node id in its string form: `i=85`, `ns=2;s=Tank.Level`, `ns=3;g=<uuid>`,
 * `ns=1;b=<base64>`, or with a namespace URI (`nsu=urn:plc;s=Tank.Level`), which survives
 * servers that renumber their namespaces. Only the syntax is checked here.
 */
export const NODE_ID = /^(?:(?:ns=\d{1,5}|nsu=[^;]{1,512});)?(?:i=\d{1,10}|s=.{1,4096}|g=[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|b=[A-Za-z0-9+/]+={0,2})$/s;

export const nodeIdSchema = z.string().regex(NODE_ID, "an OPC UA node id such as ns=2;s=Tank.Level, i=2258 or nsu=urn:plc;s=Tank.Level");

