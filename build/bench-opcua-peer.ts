/**
 * The load side of the OPC UA benchmark, two child processes on the load CPUs:
 * `bench.cjs opcua-device`, the legacy device (a node-opcua server, security None, anonymous,
 * `GW_BENCH_NODES` Double variables under `Bench`, each set to the wall time every
 * `GW_BENCH_UPDATE_MS`), and `bench.cjs opcua-clients`, the node-opcua clients that load it,
 * directly or through the front. They are separate processes so that the direct path crosses
 * processes too (in one event loop a direct read never waits for the scheduler, and the
 * comparison would measure that). Each talks to the benchmark over IPC: the first message
 * says it is ready, then one answer per request.
 */
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import {
  AttributeIds,
  DataType,
  MessageSecurityMode,
  OPCUACertificateManager,
  OPCUAClient,
  OPCUAServer,
  SecurityPolicy,
  setErrorLogger,
  setWarningLogger,
  TimestampsToReturn,
  UserTokenType,
  type ClientSession,
  type DataValue,
  type UAVariable,
  type UserIdentityInfo,
} from "node-opcua";

export interface PeerTarget {
  endpoint: string;
  /** Through the front: SignAndEncrypt, Basic256Sha256, this user; else None and anonymous. */
  user?: { name: string; password: string };
}
export type PeerRequest =
  | ({ kind: "connect" } & PeerTarget)
  | ({ kind: "read"; clients: number; nodesPerRead: number; durationMs: number; warmupMs: number } & PeerTarget)
  | ({ kind: "subscribe"; nodes: number; publishingMs: number; durationMs: number; warmupMs: number } & PeerTarget);

export interface LoadFigures {
  per_s: number;
  p50_ms: number | null;
  p99_ms: number | null;
  samples: number;
  errors: number;
  /** The measuring window, wall-clock ms (the front's CPU time is taken over it). */
  from: number;
  to: number;
}

/** Wall-clock milliseconds with sub-millisecond resolution (comparable across processes). */
const wallMs = () => performance.timeOrigin + performance.now();

export async function opcuaDevice(): Promise<void> {
  setWarningLogger(() => undefined);
  setErrorLogger(() => undefined);
  const dir = process.env.GW_BENCH_DIR!;
  const nodes = Number(process.env.GW_BENCH_NODES);
  const server = new OPCUAServer({
    port: 0,
    hostname: "127.0.0.1",
    serverCertificateManager: new OPCUACertificateManager({ rootFolder: join(dir, "legacy-pki"), automaticallyAcceptUnknownCertificate: true, disableFileWatchers: true }),
    securityModes: [MessageSecurityMode.None],
    securityPolicies: [SecurityPolicy.None],
    allowAnonymous: true,
  });
  await server.initialize();
  const space = server.engine.addressSpace!;
  const ns = space.getOwnNamespace();
  const folder = ns.addFolder(space.rootFolder.objects, { browseName: "Bench" });
  const vars: UAVariable[] = [];
  for (let i = 0; i < nodes; i++) {
    vars.push(ns.addVariable({ organizedBy: folder, browseName: `N${i}`, nodeId: `s=Bench.N${i}`, dataType: "Double", minimumSamplingInterval: 0, value: { dataType: DataType.Double, value: i } }));
  }
  await server.start();
  const every = Number(process.env.GW_BENCH_UPDATE_MS);
  setInterval(() => {
    const now = wallMs();
    for (const v of vars) v.setValueFromSource({ dataType: DataType.Double, value: now });
  }, every);
  process.send!({ port: server.endpoints[0]!.port, namespaceUri: ns.namespaceUri });
}

export async function opcuaClients(): Promise<void> {
  setWarningLogger(() => undefined);
  setErrorLogger(() => undefined);
  const dir = process.env.GW_BENCH_DIR!;
  const nodes = Number(process.env.GW_BENCH_NODES);
  const namespaceUri = process.env.GW_BENCH_NSURI!;
  const clientPki = new OPCUACertificateManager({ rootFolder: join(dir, "client-pki"), automaticallyAcceptUnknownCertificate: true, disableFileWatchers: true });

  async function open(t: PeerTarget): Promise<{ session: ClientSession; close: () => Promise<void> }> {
    const secure = !!t.user;
    const client = OPCUAClient.create({
      applicationName: "bench-scada",
      clientCertificateManager: clientPki,
      securityMode: secure ? MessageSecurityMode.SignAndEncrypt : MessageSecurityMode.None,
      securityPolicy: secure ? SecurityPolicy.Basic256Sha256 : SecurityPolicy.None,
      endpointMustExist: false,
      connectionStrategy: { maxRetry: 0 },
    });
    await client.connect(t.endpoint);
    const who: UserIdentityInfo = t.user ? { type: UserTokenType.UserName, userName: t.user.name, password: t.user.password } : { type: UserTokenType.Anonymous };
    try {
      const session = await client.createSession(who);
      return { session, close: async () => (await session.close().catch(() => undefined), await client.disconnect()) };
    } catch (e) {
      await client.disconnect();
      throw e;
    }
  }

  /** Node ids as the target names them (the front registers the device's namespace at another index). */
  async function ids(session: ClientSession, count: number): Promise<string[]> {
    const table = await session.readNamespaceArray();
    const i = table.indexOf(namespaceUri);
    return Array.from({ length: count }, (_, k) => `ns=${i};s=Bench.N${k % nodes}`);
  }

  async function read(r: Extract<PeerRequest, { kind: "read" }>): Promise<LoadFigures> {
    const conns = await Promise.all(Array.from({ length: r.clients }, () => open(r)));
    const lat: number[] = [];
    let count = 0;
    let errors = 0;
    let measuring = false;
    let stop = false;
    const loops = conns.map(async (c) => {
      const toRead = (await ids(c.session, r.nodesPerRead)).map((nodeId) => ({ nodeId, attributeId: AttributeIds.Value }));
      while (!stop) {
        const t0 = performance.now();
        try {
          const values = await c.session.read(toRead);
          if (values.some((v) => !v.statusCode.isGood())) errors++;
        } catch {
          errors++;
        }
        if (measuring) {
          count++;
          lat.push(performance.now() - t0);
        }
      }
    });
    const w = await measure(r, (on) => (measuring = on));
    stop = true;
    await Promise.all(loops);
    await Promise.all(conns.map((c) => c.close()));
    return figures(count, w, lat, errors);
  }

  async function subscribe(r: Extract<PeerRequest, { kind: "subscribe" }>): Promise<LoadFigures> {
    const c = await open(r);
    const sub = await c.session.createSubscription2({ requestedPublishingInterval: r.publishingMs, requestedMaxKeepAliveCount: 20, requestedLifetimeCount: 120, maxNotificationsPerPublish: 0, publishingEnabled: true, priority: 1 });
    const lat: number[] = [];
    let count = 0;
    let errors = 0;
    let measuring = false;
    const group = await sub.monitorItems(
      (await ids(c.session, r.nodes)).map((nodeId) => ({ nodeId, attributeId: AttributeIds.Value })),
      { samplingInterval: 0, queueSize: 1, discardOldest: true },
      TimestampsToReturn.Both,
    );
    group.on("changed", (_m: unknown, dv: DataValue) => {
      if (!measuring) return;
      if (!dv.statusCode.isGood() || typeof dv.value.value !== "number") {
        errors++;
        return;
      }
      count++;
      lat.push(wallMs() - dv.value.value);
    });
    // Each value is the wall time the device set it.
    const w = await measure(r, (on) => (measuring = on));
    await sub.terminate().catch(() => undefined);
    await c.close();
    return figures(count, w, lat, errors);
  }

  process.on("message", (m: PeerRequest) => {
    const run = m.kind === "connect" ? open(m).then(async (c) => (await c.close(), { ok: true })) : m.kind === "read" ? read(m) : subscribe(m);
    run.then(
      (r) => process.send!(r),
      (e: unknown) => process.send!({ error: e instanceof Error ? e.message : String(e) }),
    );
  });
  process.send!({ ready: true });
}

/** Warm up, then measure for durationMs; returns the measuring window (wall-clock ms). */
async function measure(r: { durationMs: number; warmupMs: number }, set: (on: boolean) => void): Promise<{ from: number; to: number }> {
  await new Promise((res) => setTimeout(res, r.warmupMs));
  set(true);
  const from = wallMs();
  await new Promise((res) => setTimeout(res, r.durationMs));
  set(false);
  return { from, to: wallMs() };
}

function figures(count: number, w: { from: number; to: number }, lat: number[], errors: number): LoadFigures {
  lat.sort((a, b) => a - b);
  const q = (p: number) => (lat.length ? Math.round(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]! * 100) / 100 : null);
  return { per_s: Math.round((count * 1000) / (w.to - w.from)), p50_ms: q(0.5), p99_ms: q(0.99), samples: lat.length, errors, ...w };
}
