/**
 * The OPC UA client as a daemon component: one certificate store, one link per configured
 * server, and per server its points by subscription (subscriber.ts) or polling (poller.ts). The OPC UA stack is imported here only, and this module only
 * when the config has an `opcua` section, so gateways without OPC UA never pay for it.
 *
 * The certificate store lives in `pki_dir`: the client's own certificate and key are made on
 * first start (key 0600; the daemon refuses a looser one), configured server certificates are
 * added to `trusted/`, refused ones land in `rejected/`.
 */
import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import type { OPCUACertificateManager } from "node-opcua-certificate-manager";
import type { EventSink } from "../../agent/core/events";
import type { ReadingSink } from "../../agent/core/readings";
import { DaemonError } from "../../agent/core/errors";
import { checkOwnKey, loadUserCredentials } from "./user";
import type { OpcuaConfig } from "./config";
import { OpcuaEvents, type CertificateSeen } from "./events";
import { derOf, describeCertificate, OpcuaLink, rejectedFiles, type LinkStatus } from "./link";
import { OpcuaPoller, type OpcuaPolledPoint } from "./poller";
import { OpcuaSubscriber, type PointsBy } from "./subscriber";
import type { FrontStatus, OpcuaFront } from "./front";
import { OpenWindows, type WindowSpan } from "./front-policy";
import { findPki, listPki, type PkiEntry, type TrustList } from "./pki";
import { applicationUri, ensureOwnCertificate, ownCertificateFile, ownCertificateProblem, ownKeyFile } from "./own-cert";
import { boundedStackLog } from "./stack-log";
import { makeDirs } from "../../agent/core/dirs";

export interface OpcuaServiceLog {
  info(o: object, m: string): void;
  warn(o: object, m: string): void;
  debug(o: object, m: string): void;
}

export interface OpcuaStatus {
  own_certificate: { file: string; thumbprint: string; sha256: string; subject: string; application_uri: string; not_after: string; problem?: string } | null;
  /** Server certificates refused and kept for review (`gatewarden opcua trust THUMBPRINT`). */
  rejected_certificates: CertificateSeen[];
  servers: (LinkStatus & { points: number; points_by: PointsBy; subscription_error?: string; notifications: number; polls: number; readings: number; bad: number })[];
  /** The secure front, when `opcua.front` is configured. */
  front?: FrontStatus;
}

export class OpcuaService {
  private readonly links: OpcuaLink[] = [];
  private readonly pollers = new Map<string, OpcuaPoller>();
  /** Per server with `points_mode` auto or subscription: points by monitored items. */
  private readonly subscribers = new Map<string, OpcuaSubscriber>();
  private ownCertificate: string | undefined;
  private certificates: OPCUACertificateManager | undefined;
  private events: OpcuaEvents | undefined;
  /** The secure front re-exposing one upstream (`opcua.front`), if configured. */
  front: OpcuaFront | undefined;
  /** The write windows open now, as the daemon's core last sent them (`gatewarden window`). */
  private readonly windows = new OpenWindows();

  constructor(
    private readonly o: { config: OpcuaConfig; deviceId: string; points: readonly OpcuaPolledPoint[]; events: EventSink; readings?: ReadingSink; log: OpcuaServiceLog },
  ) {}

  /** The core's open write windows (all of them: the front's roles decide which apply). */
  setWindows(open: readonly WindowSpan[]): void {
    this.windows.set(open);
  }

  async start(): Promise<void> {
    const c = this.o.config;
    const log = this.o.log;
    // Fail closed before anything connects: password and key files must exist and be
    // owner-only, and a user certificate must match its key.
    for (const s of c.servers) loadUserCredentials(s);
    const ua = await import("node-opcua-client");
    // The stack's own console output goes to the daemon's log instead (never at info: it is chatty).
    ua.setWarningLogger(boundedStackLog((line) => log.debug({ stack: "node-opcua" }, line)));
    ua.setErrorLogger(boundedStackLog((line) => log.warn({ stack: "node-opcua" }, line)));
    ua.setDebugLogger(() => undefined);
    const { OPCUACertificateManager } = await import("node-opcua-certificate-manager");
    makeDirs(c.pki_dir, "opcua.pki_dir");
    checkOwnKey(c.pki_dir);
    const certificates = new OPCUACertificateManager({ rootFolder: c.pki_dir, automaticallyAcceptUnknownCertificate: false, keySize: 2048, disableFileWatchers: true });
    try {
      await certificates.initialize();
    } catch (e) {
      throw new DaemonError("OPCUA_SETUP", `OPC UA certificate store ${c.pki_dir} cannot be opened: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    checkOwnKey(c.pki_dir);
    await ensureOwnCertificate(certificates, this.ownOptions());
    const problem = ownCertificateProblem(certificates, this.o.deviceId);
    if (problem) log.warn({ file: ownCertificateFile(certificates), problem }, "The OPC UA application certificate is not the gateway's own kind; `gatewarden opcua pki renew` makes a new one.");
    for (const s of c.servers) {
      if (!s.server_certificate) continue;
      let der: Buffer;
      try {
        der = derOf(readFileSync(s.server_certificate));
        describeCertificate(der);
      } catch (e) {
        throw new DaemonError("OPCUA_SETUP", `opcua server ${s.name}: server_certificate ${s.server_certificate} is not a readable certificate: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
      }
      await certificates.trustCertificate(der);
    }
    const events = new OpcuaEvents(this.o.events);
    this.events = events;
    this.certificates = certificates;
    for (const s of c.servers) {
      const link = new OpcuaLink(ua, s, certificates, events, { maxMessageBytes: c.max_message_bytes, maxChunkCount: c.max_chunk_count, applicationUri: applicationUri(this.o.deviceId) }, log);
      const points = this.o.points.filter((p) => p.source.server === s.name);
      const poller = new OpcuaPoller(link, points, this.o.readings, events);
      this.links.push(link);
      this.pollers.set(s.name, poller);
      if (s.points_mode !== "poll") this.subscribers.set(s.name, new OpcuaSubscriber(ua, link, points, this.o.readings, events, poller, s.points_mode, log));
    }
    this.ownCertificate = ownCertificateFile(certificates);
    if (c.front) {
      const link = this.links.find((l) => l.config.name === c.front!.server)!;
      const { OpcuaFront } = await import("./front");
      this.front = new OpcuaFront({ config: c.front, pkiDir: c.pki_dir, ownCertificate: { certificateFile: ownCertificateFile(certificates), privateKeyFile: ownKeyFile(certificates) }, deviceId: this.o.deviceId, link, sink: this.o.events, log, maxNodesPerRead: link.config.max_nodes_per_read, windows: this.windows });
      await this.front.start();
    }
    for (const l of this.links) {
      l.start();
      const sub = this.subscribers.get(l.config.name);
      if (sub) sub.start();
      else this.pollers.get(l.config.name)!.start();
    }
    log.info({ servers: c.servers.map((s) => s.name), points: this.o.points.length }, "OPC UA client started.");
  }

  status(): OpcuaStatus {
    return {
      own_certificate: this.ownCertificateInfo(),
      rejected_certificates: this.rejected(),
      servers: this.links.map((l) => {
        const p = this.pollers.get(l.config.name)!;
        const sub = this.subscribers.get(l.config.name);
        const by: PointsBy = sub ? sub.by : l.isUp() ? "poll" : "none";
        return {
          ...l.status(),
          points: this.o.points.filter((x) => x.source.server === l.config.name).length,
          points_by: by,
          ...(sub?.subscriptionError ? { subscription_error: sub.subscriptionError } : {}),
          notifications: sub?.counters.notifications ?? 0,
          polls: p.counters.polls,
          readings: p.counters.readings + (sub?.counters.readings ?? 0),
          bad: p.counters.bad + (sub?.counters.bad ?? 0),
        };
      }),
      ...(this.front ? { front: this.front.status() } : {}),
    };
  }

  /** The refused server certificates kept in the store, newest first. */
  rejected(): CertificateSeen[] {
    const dir = this.certificates?.rejectedFolder;
    if (!dir) return [];
    return rejectedFiles(dir).flatMap((file) => {
      try {
        return [{ ...describeCertificate(derOf(readFileSync(file))), file }];
      } catch {
        return []; // not a certificate: not ours to judge here
      }
    });
  }


  /**
   * Trusts a refused server certificate, named by its SHA-1 thumbprint (what OPC UA tools and
   * the refusal event show): it moves to the trusted store, an audit event records who did it,
   * and servers that are down try again at once. A server with `server_certificate` set still
   * accepts only that one.
   */
  async trust(thumbprint: string, by: string): Promise<CertificateSeen> {
    const want = thumbprint.replace(/[^0-9a-f]/gi, "").toLowerCase();
    if (want.length !== 40) throw new DaemonError("USAGE", `"${thumbprint}" is not a SHA-1 thumbprint (40 hex digits)`);
    const cert = this.rejected().find((c) => c.thumbprint === want);
    if (!cert || !this.certificates) {
      throw new DaemonError("USAGE", `no refused server certificate has thumbprint ${want}; \`gatewarden opcua status\` lists them`);
    }
    this.refusePinned(cert);
    await this.certificates.trustCertificate(derOf(readFileSync(cert.file!)));
    this.events?.certificateTrusted({ thumbprint: cert.thumbprint, sha256: cert.sha256, subject: cert.subject }, by);
    this.o.log.info({ thumbprint: cert.thumbprint, subject: cert.subject, by }, "OPC UA server certificate trusted.");
    for (const l of this.links) l.retryNow();
    return cert;
  }

  /**
   * A server with `server_certificate` accepts exactly that certificate: trusting the one it
   * now presents would change nothing (the link would stay down), so it is refused with what
   * to change instead.
   */
  private refusePinned(cert: CertificateSeen): void {
    const c = this.o.config;
    const i = c.servers.findIndex((s, j) => s.server_certificate && this.links[j]?.refusedCertificate?.thumbprint === cert.thumbprint);
    if (i < 0) return;
    const s = c.servers[i]!;
    throw new DaemonError(
      "OPCUA_PINNED",
      `server ${s.name} is pinned to server_certificate ${s.server_certificate}, so trusting ${cert.thumbprint} has no effect. If the device's certificate changed on purpose, point opcua.servers[${i}].server_certificate at the new certificate${cert.file ? ` (the refused copy is ${cert.file})` : ""}, or remove server_certificate to rely on the trust list, then restart the daemon`,
    );
  }

  private ownOptions() {
    return { deviceId: this.o.deviceId, subject: this.o.config.certificate.subject, validityDays: this.o.config.certificate.validity_days };
  }

  /** A new application certificate (same key) for new channels of the links and the front. */
  async renew(by: string): Promise<NonNullable<OpcuaStatus["own_certificate"]>> {
    const cm = this.certificates;
    if (!cm) throw new DaemonError("CONFIG_INCOMPLETE", "the OPC UA client is not running in this daemon");
    const before = this.ownCertificateInfo();
    await ensureOwnCertificate(cm, this.ownOptions(), true);
    const after = this.ownCertificateInfo()!;
    this.events?.ownCertificateRenewed(before?.thumbprint, after, by);
    this.front?.certificateChanged();
    for (const l of this.links) l.retryNow();
    this.o.log.info({ thumbprint: after.thumbprint, by }, "OPC UA application certificate renewed.");
    return after;
  }

  /** Every certificate of the three trust lists (`gatewarden opcua pki list`). */
  pki(): PkiEntry[] {
    return listPki({ servers: this.certificates, clients: this.front?.certificates, users: this.front?.userCertificates });
  }

  pkiShow(thumbprint: string): PkiEntry[] {
    const found = findPki(this.pki(), thumbprint);
    if (!found.length) throw new DaemonError("USAGE", `no certificate with thumbprint ${thumbprint} in any trust list; \`gatewarden opcua pki list\` shows them`);
    return found;
  }

  /** Moves a certificate to the trusted list of its store; a signed audit event records who did it. */
  async pkiTrust(thumbprint: string, by: string): Promise<PkiEntry> {
    const found = this.pkiShow(thumbprint);
    const e = found.find((x) => x.state === "rejected") ?? found[0]!;
    if (e.state === "trusted") return e;
    if (e.list === "servers") this.refusePinned(e);
    await this.store(e.list)!.trustCertificate(derOf(readFileSync(e.file)));
    this.events?.trustChanged(e.list, "trusted", e, by);
    this.o.log.info({ list: e.list, thumbprint: e.thumbprint, subject: e.subject, by }, "OPC UA certificate trusted.");
    if (e.list === "servers") for (const l of this.links) l.retryNow();
    return { ...e, state: "trusted" };
  }

  /** Moves a certificate to the rejected list of its store (signed audit event). */
  async pkiReject(thumbprint: string, by: string): Promise<PkiEntry> {
    const found = this.pkiShow(thumbprint);
    const e = found.find((x) => x.state === "trusted") ?? found[0]!;
    if (e.state === "rejected") return e;
    await this.store(e.list)!.rejectCertificate(derOf(readFileSync(e.file)));
    this.events?.trustChanged(e.list, "rejected", e, by);
    this.o.log.info({ list: e.list, thumbprint: e.thumbprint, subject: e.subject, by }, "OPC UA certificate rejected.");
    return { ...e, state: "rejected" };
  }

  private store(list: TrustList): OPCUACertificateManager | undefined {
    return list === "servers" ? this.certificates : list === "clients" ? this.front?.certificates : this.front?.userCertificates;
  }

  async stop(): Promise<void> {
    await this.front?.stop();
    for (const s of this.subscribers.values()) s.stop();
    for (const p of this.pollers.values()) p.stop();
    await Promise.all(this.links.map((l) => l.stop()));
  }

  /** Where the client certificate is and its thumbprint: what the server's admin must trust. */
  private ownCertificateInfo(): OpcuaStatus["own_certificate"] {
    const f = this.ownCertificate;
    if (!f || !existsSync(f)) return null;
    try {
      const der = derOf(readFileSync(f));
      const d = describeCertificate(der);
      const x = new X509Certificate(der);
      const uri = /URI:([^,\s]+)/.exec(x.subjectAltName ?? "")?.[1] ?? "";
      const problem = this.certificates ? ownCertificateProblem(this.certificates, this.o.deviceId) : undefined;
      return { file: f, thumbprint: d.thumbprint, sha256: d.sha256, subject: d.subject, application_uri: uri, not_after: new Date(x.validTo).toISOString(), ...(problem ? { problem } : {}) };
    } catch {
      return null; // unreadable: the status says there is none
    }
  }
}
