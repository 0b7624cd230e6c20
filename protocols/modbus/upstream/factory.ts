import type { UpstreamConfig } from "../config";
import { splitHostPort } from "../../../agent/core/host-port";
import { RtuBus } from "./rtu-bus";
import { SerialByteTransport, TcpByteTransport } from "./rtu-transport";
import type { Upstream, UpstreamObserver } from "./upstream";
import { TcpUpstream } from "./tcp";

export function createUpstream(u: UpstreamConfig, observer?: UpstreamObserver): Upstream {
  if (u.type === "tcp") {
    const { host, port } = splitHostPort(u.target);
    return new TcpUpstream({ ...u, host, port, ...(observer ? { observer } : {}) });
  }
  if (u.type === "rtu_tcp") {
    const { host, port } = splitHostPort(u.target);
    return new RtuBus({ ...u, target: u.target, transport: new TcpByteTransport(host, port, u.connect_timeout_ms), ...(observer ? { observer } : {}) });
  }
  return new RtuBus({
    ...u,
    target: u.device,
    transport: new SerialByteTransport({ path: u.device, baud: u.baud, parity: u.parity, data_bits: u.data_bits, stop_bits: u.stop_bits }),
    ...(observer ? { observer } : {}),
  });
}
