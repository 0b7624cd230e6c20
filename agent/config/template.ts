import { schemaModeline } from "./json-schema";

/** The commented config that `gatewarden init` writes. Every key is documented in place. */
export function configTemplate(o: { deviceId: string; dataDir: string }): string {
  return `${schemaModeline}
# Gatewarden configuration.
# Check it with:   gatewarden config validate --config THIS_FILE
# Change a key:    gatewarden config set KEY VALUE   (keeps these comments)
# Relative paths are relative to this file's directory.

device:
  # Stable id of this gateway; names its MQTT topic and every event. [A-Za-z0-9._-], <= 64.
  id: ${o.deviceId}
  # Ed25519 private key (PEM). Must be mode 0600: the daemon refuses to start otherwise.
  key: keys/device.key

upstream:
  # SOC broker: mqtts://HOST:8883 (TLS) or mqtt://HOST:1883 (tests only). Unset: events stay
  # in the outbox until it is set.
  # url: mqtts://soc-broker.example.net:8883
  # CA that signed the broker's certificate, and this gateway's client certificate and key (mTLS).
  # ca: tls/ca.pem
  # cert: tls/gateway.pem
  # key: tls/gateway.key
  # The SOC's X25519 public key (from \`gatewarden soc keys init\`): batches are sealed to it.
  # soc_public_key: keys/soc.pub
  # Events go to <topic_prefix>/<device.id>/events.
  topic_prefix: gatewarden/v1
  # Messages in flight awaiting PUBACK, events per message, bytes per message.
  max_inflight: 16
  max_batch_events: 256
  max_message_bytes: 256KiB
  # Reconnect backoff with jitter.
  reconnect_min_ms: 500
  reconnect_max_ms: 30000
  # soc: an outbox row is freed only when the SOC receiver acknowledged it end to end (signed
  # acks on <topic_prefix>/<device.id>/ack); broker: on the broker's PUBACK (no Gatewarden receiver).
  ack: soc
  # Rows the broker acknowledged but the SOC did not are sent again after this long.
  soc_ack_timeout_ms: 30000

buffer:
  # The SQLite outbox: the store of record until the SOC (or, with upstream.ack: broker, the
  # broker) acknowledges each event.
  path: ${o.dataDir}/outbox.db
  # Disk budget including the write-ahead log. When full, telemetry and heartbeats are evicted
  # before audit records and findings, and a signed loss record names what was evicted.
  max_bytes: 256MiB
  # Events are committed in batches at most this often.
  flush_ms: 20
  # Telemetry alone waits up to this long, at most 256 rows of it (fewer, larger commits:
  # SD-card wear); any other event commits within flush_ms and takes it along.
  low_flush_ms: 30000
  # A command holding the outbox when the daemon starts (\`gatewarden outbox check\`): the start
  # waits this long for it to end, then refuses (OUTBOX_LOCKED) and records nothing.
  lock_wait_ms: 30000

heartbeat:
  # A signed heartbeat with outbox state and device posture.
  interval_ms: 60000
  # The event loop held up this long or longer (a slow SD card, a stopped or starved process:
  # the Modbus proxy does not answer meanwhile) is a signed loop_stall event.
  stall_report_ms: 2000

control:
  # Local socket for \`gatewarden status\` and friends (created 0600).
  socket: ${o.dataDir}/gatewarden.sock

log:
  # fatal, error, warn, info, debug, trace or silent. Logs are JSON lines on stdout.
  level: info
`;
}
