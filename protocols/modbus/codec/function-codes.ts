/**
 * Public Modbus function codes (Modbus Application Protocol v1.1b3 §6) and the presets the
 * commercial enforcers use (Hirschmann EAGLE / Tofino): read-only, read-write, programming.
 */
export const FC = {
  READ_COILS: 1,
  READ_DISCRETE_INPUTS: 2,
  READ_HOLDING_REGISTERS: 3,
  READ_INPUT_REGISTERS: 4,
  WRITE_SINGLE_COIL: 5,
  WRITE_SINGLE_REGISTER: 6,
  READ_EXCEPTION_STATUS: 7,
  DIAGNOSTICS: 8,
  GET_COMM_EVENT_COUNTER: 11,
  GET_COMM_EVENT_LOG: 12,
  WRITE_MULTIPLE_COILS: 15,
  WRITE_MULTIPLE_REGISTERS: 16,
  REPORT_SERVER_ID: 17,
  READ_FILE_RECORD: 20,
  WRITE_FILE_RECORD: 21,
  MASK_WRITE_REGISTER: 22,
  READ_WRITE_MULTIPLE_REGISTERS: 23,
  READ_FIFO_QUEUE: 24,
  ENCAPSULATED_INTERFACE: 43,
} as const;

/** Function codes the codec parses; anything else is answered with exception 01 (§7). */
export const SUPPORTED_FUNCTION_CODES: readonly number[] = [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, 20, 21, 22, 23, 24, 43];

export const FUNCTION_NAMES: Readonly<Record<number, string>> = {
  1: "read_coils",
  2: "read_discrete_inputs",
  3: "read_holding_registers",
  4: "read_input_registers",
  5: "write_single_coil",
  6: "write_single_register",
  7: "read_exception_status",
  8: "diagnostics",
  11: "get_comm_event_counter",
  12: "get_comm_event_log",
  15: "write_multiple_coils",
  16: "write_multiple_registers",
  17: "report_server_id",
  20: "read_file_record",
  21: "write_file_record",
  22: "mask_write_register",
  23: "read_write_multiple_registers",
  24: "read_fifo_queue",
  43: "read_device_identification",
};

/** Function codes that change device state. FC 23 both reads and writes. */
export const WRITE_FUNCTION_CODES: readonly number[] = [5, 6, 15, 16, 21, 22, 23];

export const PRESETS = {
  "read-only": [1, 2, 3, 4, 7, 11, 12, 17, 20, 24],
  "read-write": [1, 2, 3, 4, 7, 11, 12, 17, 20, 24, 5, 6, 15, 16, 21, 22, 23],
  // Programming adds vendor codes (40, 42, 90 Unity/UMAS, 125, 126) that this codec does not
  // parse; they are answered 01 before policy. The preset keeps the same meaning otherwise.
  programming: [1, 2, 3, 4, 7, 11, 12, 17, 20, 24, 5, 6, 15, 16, 21, 22, 23, 40, 42, 90, 125, 126],
} as const satisfies Record<string, readonly number[]>;
export type PresetName = keyof typeof PRESETS;

/**
 * FC 8 sub-functions (§6.8.1). Those that change the device's state are denied unless a rule
 * lists them: 01 restart communications, 03 change ASCII delimiter, 04 force listen-only mode,
 * 10 clear counters and diagnostic register, 20 clear overrun counter and flag.
 */
export const DIAG_SUBFUNCTIONS: readonly number[] = [0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 15, 16, 17, 18, 20];
export const DIAG_STATE_CHANGING: readonly number[] = [1, 3, 4, 10, 20];
export const DIAG_READ_ONLY: readonly number[] = DIAG_SUBFUNCTIONS.filter((s) => !DIAG_STATE_CHANGING.includes(s));

/** Exception codes (§7). */
export const EX = {
  ILLEGAL_FUNCTION: 0x01,
  ILLEGAL_DATA_ADDRESS: 0x02,
  ILLEGAL_DATA_VALUE: 0x03,
  SERVER_DEVICE_FAILURE: 0x04,
  GATEWAY_PATH_UNAVAILABLE: 0x0a,
  GATEWAY_TARGET_FAILED: 0x0b,
} as const;
