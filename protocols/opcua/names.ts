/** Names shared by the OPC UA client and front configs: security policies and node ids. */
import { z } from "zod";

export const SECURITY_POLICIES = ["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"] as const;

/**
 * Deprecated (SHA-1) policies a legacy device may offer nothing but: upstream only, opt-in per
 * server (`allow_legacy_policy`), a posture finding while in use, never offered by the front.
 * Basic128Rsa15 needs Node's `--security-revert=CVE-2023-46809` (RSA PKCS#1 v1.5 decryption), a
 * process-wide switch: the OPC UA process is started with it only when a server uses it.
 */
export const LEGACY_POLICIES = ["Basic256", "Basic128Rsa15"] as const;
export type LegacyPolicy = (typeof LEGACY_POLICIES)[number];

/**
 * An OPC UA node id in its string form: `i=85`, `ns=2;s=Tank.Level`, `ns=3;g=<uuid>`,
 * `ns=1;b=<base64>`, or with a namespace URI (`nsu=urn:plc;s=Tank.Level`), which survives
 * servers that renumber their namespaces. Only the syntax is checked here.
 */
export const NODE_ID = /^(?:(?:ns=\d{1,5}|nsu=[^;]{1,512});)?(?:i=\d{1,10}|s=.{1,4096}|g=[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|b=[A-Za-z0-9+/]+={0,2})$/s;

export const nodeIdSchema = z.string().regex(NODE_ID, "an OPC UA node id such as ns=2;s=Tank.Level, i=2258 or nsu=urn:plc;s=Tank.Level");

