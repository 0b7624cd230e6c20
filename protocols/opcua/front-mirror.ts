/**
 * Mirrors the upstream's nodes into the front's address space: from each configured root,
 * the objects, folders, variables and methods below it (hierarchical references, breadth
 * first, at most `max_nodes`). Node ids keep their identifier and namespace URI (the front
 * registers the upstream's namespaces, so the index may differ; `nsu=` ids are the same).
 * Namespace 0 nodes of the upstream (its Server object, types) are not mirrored: the front
 * has its own. Variables are bound to the upstream (reads, writes, monitored items through
 * FrontUpstream); methods forward calls.
 */
import type { ClientSession, DataValue, NodeId, ReferenceDescription, StatusCode, Variant } from "node-opcua-client";
import type { AddressSpace, BaseNode, Namespace, UAMethod, UAObject, UAVariable } from "node-opcua-address-space";
import type { FrontNode } from "./front-policy";
import type { FrontUpstream } from "./front-upstream";

type ClientModule = typeof import("node-opcua-client");

export interface MirroredVariable {
  kind: "variable";
  node: UAVariable;
  info: FrontNode;
}
export interface MirroredMethod {
  kind: "method";
  node: UAMethod;
  info: FrontNode;
  /** Upstream id of the object the method belongs to. */
  objectId: string;
}
export interface MirroredObject {
  kind: "object";
  node: UAObject;
  info: FrontNode;
}
export type Mirrored = MirroredVariable | MirroredMethod | MirroredObject;

export interface MirrorResult {
  /** By front node id (`ns=<front index>;...`). */
  byFrontId: Map<string, Mirrored>;
  nodes: FrontNode[];
  /** True when `max_nodes` stopped the walk. */
  truncated: boolean;
  /** Nodes that could not be mirrored, with why. */
  skipped: string[];
}

const NODE_CLASS_OBJECT = 1;
const NODE_CLASS_VARIABLE = 2;
const NODE_CLASS_METHOD = 4;
const FOLDER_TYPE = "i=61";
const HAS_PROPERTY = "i=46";
const ORGANIZES = "i=35";
const OBJECTS_FOLDER = "i=85";

type Item = { id: NodeId; parent: BaseNode; path: string; ref?: ReferenceDescription };
type Relation = "organizedBy" | "componentOf" | "propertyOf";

export interface MirrorOptions {
  roots: readonly string[];
  maxNodes: number;
}

export class FrontMirror {
  constructor(
    private readonly ua: ClientModule,
    private readonly space: AddressSpace,
    private readonly upstream: FrontUpstream,
  ) {}

  async build(session: ClientSession, upstreamNamespaces: readonly string[], o: MirrorOptions): Promise<MirrorResult> {
    const ua = this.ua;
    const result: MirrorResult = { byFrontId: new Map(), nodes: [], truncated: false, skipped: [] };
    const namespaces = new Map<number, Namespace>();
    const nsFor = (index: number): Namespace => {
      let ns = namespaces.get(index);
      if (!ns) {
        const uri = upstreamNamespaces[index] ?? `urn:gatewarden:upstream-ns-${index}`;
        const found = (this.space.getNamespace(uri) as Namespace | null) ?? (this.space.registerNamespace(uri) as Namespace);
        namespaces.set(index, found);
        ns = found;
      }
      return ns;
    };
    const objects = this.space.rootFolder.objects;
    const queue: Item[] = [];
    for (const r of o.roots) {
      const id = ua.resolveNodeId(resolveUri(r, upstreamNamespaces));
      if (ua.sameNodeId(id, ua.resolveNodeId(OBJECTS_FOLDER))) {
        for (const ref of await browseAll(ua, session, id)) queue.push({ id: ref.nodeId, parent: objects, path: ref.browseName.name ?? "", ref });
      } else {
        const [name] = await session.read([{ nodeId: id, attributeId: ua.AttributeIds.BrowseName }]);
        const [cls] = await session.read([{ nodeId: id, attributeId: ua.AttributeIds.NodeClass }]);
        const browseName = (name?.value.value as { name?: string } | null)?.name ?? id.toString();
        queue.push({ id, parent: objects, path: browseName, ref: { nodeId: id, browseName: { name: browseName }, nodeClass: cls?.value.value as number, referenceTypeId: ua.resolveNodeId(ORGANIZES), typeDefinition: ua.resolveNodeId("i=58") } as unknown as ReferenceDescription });
      }
    }
    while (queue.length) {
      const it = queue.shift()!;
      if (it.id.namespace === 0) continue;
      if (result.nodes.length >= o.maxNodes) {
        result.truncated = true;
        break;
      }
      const ref = it.ref!;
      const ns = nsFor(it.id.namespace);
      const frontId = `ns=${ns.index};${identifierOf(it.id.toString())}`;
      if (this.space.findNode(frontId)) continue; // reached twice (two parents)
      const upstreamId = it.id.toString();
      const info: FrontNode = { id: upstreamId, uriId: `nsu=${upstreamNamespaces[it.id.namespace] ?? ""};${identifierOf(upstreamId)}`, path: it.path, namespace: upstreamNamespaces[it.id.namespace] ?? "", kind: "object" };
      const browseName = { name: ref.browseName.name ?? upstreamId, namespaceIndex: ns.index };
      // The Objects folder takes Organizes references only.
      const rel = it.parent === objects ? "organizedBy" : relation(ref.referenceTypeId.toString());
      let m: Mirrored | undefined;
      try {
        m = await this.add(session, it, ref, ns, frontId, browseName, rel, info, result, queue);
      } catch (e) {
        // One node the front cannot represent does not stop the others.
        result.skipped.push(`${it.path}: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}`);
        continue;
      }
      if (!m) continue;
      result.byFrontId.set(frontId, m);
      result.nodes.push(info);
    }
    return result;
  }

  private async add(session: ClientSession, it: Item, ref: ReferenceDescription, ns: Namespace, frontId: string, browseName: { name: string; namespaceIndex: number }, rel: Relation, info: FrontNode, result: MirrorResult, queue: Item[]): Promise<Mirrored | undefined> {
    const ua = this.ua;
    let m: Mirrored | undefined;
    if (ref.nodeClass === NODE_CLASS_OBJECT) {
      const node = ref.typeDefinition?.toString() === FOLDER_TYPE ? ns.addFolder(it.parent as UAObject, { nodeId: frontId, browseName }) : ns.addObject({ nodeId: frontId, browseName, [rel]: it.parent });
      m = { kind: "object", node, info };
      for (const child of await browseAll(ua, session, it.id)) queue.push({ id: child.nodeId, parent: node, path: `${it.path}/${child.browseName.name ?? ""}`, ref: child });
    } else if (ref.nodeClass === NODE_CLASS_VARIABLE) {
      info.kind = "variable";
      m = { kind: "variable", node: await this.addVariable(session, ns, it.id, frontId, browseName, rel, it.parent), info };
    } else if (ref.nodeClass === NODE_CLASS_METHOD && it.parent.nodeClass === NODE_CLASS_OBJECT) {
      info.kind = "method";
      const parentId = [...result.byFrontId.values()].find((x) => x.node === it.parent)?.info.id;
      if (!parentId) return undefined;
      m = { kind: "method", node: await this.addMethod(session, ns, it.id, frontId, browseName, it.parent as UAObject), info, objectId: parentId };
    }
    return m;
  }

  private async addVariable(session: ClientSession, ns: Namespace, id: NodeId, frontId: string, browseName: { name: string; namespaceIndex: number }, rel: Relation, parent: BaseNode): Promise<UAVariable> {
    const ua = this.ua;
    const A = ua.AttributeIds;
    const [dataType, valueRank, accessLevel, msi] = await session.read([A.DataType, A.ValueRank, A.AccessLevel, A.MinimumSamplingInterval].map((attributeId) => ({ nodeId: id, attributeId })));
    const dt = dataType?.value.value as NodeId | null;
    const upstreamId = id.toString();
    const level = typeof accessLevel?.value.value === "number" ? accessLevel.value.value & 0x03 : 0x01;
    const v = ns.addVariable({
      nodeId: frontId,
      browseName,
      [rel]: parent,
      // A type of the upstream's own namespaces is not known here: the value passes as is.
      dataType: dt && dt.namespace === 0 ? dt : "BaseDataType",
      valueRank: typeof valueRank?.value.value === "number" ? valueRank.value.value : -2,
      accessLevel: level,
      userAccessLevel: level,
      minimumSamplingInterval: typeof msi?.value.value === "number" && msi.value.value >= 0 ? msi.value.value : 0,
    });
    v.bindVariable(
      {
        timestamped_get: (cb: (err: Error | null, dv?: DataValue) => void) => void this.upstream.read(upstreamId).then((dv) => cb(null, dv)),
        timestamped_set: (dv: DataValue, cb: (err: Error | null, sc?: StatusCode) => void) => void this.upstream.write(upstreamId, dv.value).then((sc) => cb(null, sc)),
      } as never,
      true,
    );
    return v;
  }

  private async addMethod(session: ClientSession, ns: Namespace, id: NodeId, frontId: string, browseName: { name: string; namespaceIndex: number }, parent: UAObject): Promise<UAMethod> {
    const ua = this.ua;
    const args: Record<string, unknown[]> = {};
    for (const p of await browseAll(ua, session, id, HAS_PROPERTY)) {
      const name = p.browseName.name;
      if (name !== "InputArguments" && name !== "OutputArguments") continue;
      const [dv] = await session.read([{ nodeId: p.nodeId, attributeId: ua.AttributeIds.Value }]);
      args[name] = Array.isArray(dv?.value.value) ? (dv.value.value as unknown[]) : [];
    }
    const method = ns.addMethod(parent, { nodeId: frontId, browseName, componentOf: parent, inputArguments: (args.InputArguments ?? []) as never, outputArguments: (args.OutputArguments ?? []) as never });
    return method;
  }

  /** Binds a mirrored method to forward its calls upstream. */
  bindMethod(m: MirroredMethod): void {
    m.node.bindMethod(async (inputArguments: Variant[], _context: unknown) => this.upstream.call(m.objectId, m.info.id, inputArguments));
  }
}

/** `nsu=URI;x` -> `ns=<index>;x` on the upstream; other forms unchanged. */
function resolveUri(id: string, namespaces: readonly string[]): string {
  const m = /^nsu=([^;]+);(.*)$/s.exec(id);
  if (!m) return id;
  const i = namespaces.indexOf(m[1]!);
  return i < 0 ? id : `ns=${i};${m[2]!}`;
}

/** `ns=2;s=Tank` -> `s=Tank`. */
function identifierOf(id: string): string {
  return id.replace(/^ns=\d+;/, "");
}

function relation(refType: string): Relation {
  return refType === ORGANIZES ? "organizedBy" : refType === HAS_PROPERTY ? "propertyOf" : "componentOf";
}

async function browseAll(ua: ClientModule, session: ClientSession, nodeId: NodeId, referenceTypeId = "HierarchicalReferences"): Promise<ReferenceDescription[]> {
  const out: ReferenceDescription[] = [];
  let r = await session.browse({ nodeId, referenceTypeId, includeSubtypes: true, browseDirection: ua.BrowseDirection.Forward, nodeClassMask: NODE_CLASS_OBJECT | NODE_CLASS_VARIABLE | NODE_CLASS_METHOD, resultMask: 63 });
  for (let guard = 0; ; guard++) {
    out.push(...(r.references ?? []));
    if (!r.continuationPoint || guard > 1000) break;
    r = await session.browseNext(r.continuationPoint, false);
  }
  return out;
}
