/**
 * A small schema language for wire messages. Every message is a CBOR array
 * `[typeTag, field1, field2, ...]`; a schema lists the fields in order with their type and
 * bounds. The same schema drives encoding (so we never send what we would refuse) and strict
 * decoding (exact arity, exact types, every length bounded), which is what protobuf would not
 * give us: protobuf accepts missing and unknown fields silently.
 */
import { WireDecodeError, WireEncodeError } from "./errors.ts";

/** One field's type and bounds. */
export type FieldSpec =
  | { kind: "bytes"; min: number; max: number }
  | { kind: "string"; min: number; max: number }
  | { kind: "uint"; max: number }
  | { kind: "bool" }
  | { kind: "array"; of: FieldSpec; max: number }
  | { kind: "tuple"; fields: readonly (readonly [string, FieldSpec])[] };

/** Byte string of length in [min, max]. */
export const bytes = (min: number, max: number): FieldSpec => ({ kind: "bytes", min, max });
/** Byte string of exactly n bytes. */
export const fixedBytes = (n: number): FieldSpec => ({ kind: "bytes", min: n, max: n });
/** UTF-8 text of [min, max] UTF-16 code units (JS string length). */
export const text = (min: number, max: number): FieldSpec => ({ kind: "string", min, max });
/** Non-negative safe integer up to max. */
export const uint = (max: number = Number.MAX_SAFE_INTEGER): FieldSpec => ({ kind: "uint", max });
/** A boolean. */
export const bool = (): FieldSpec => ({ kind: "bool" });
/** Array of at most max elements of one spec. */
export const arrayOf = (of: FieldSpec, max: number): FieldSpec => ({ kind: "array", of, max });
/** A nested positional record, decoded to an object with the given field names. */
export const tuple = (...fields: (readonly [string, FieldSpec])[]): FieldSpec => ({
  kind: "tuple",
  fields,
});

/** A message type: its tag on the wire, its name in TypeScript, its fields in order. */
export interface MessageSpec {
  tag: number;
  type: string;
  fields: readonly (readonly [string, FieldSpec])[];
}

/** Check a decoded value against a spec; returns it in TypeScript shape or throws. */
function check(value: unknown, spec: FieldSpec, path: string): unknown {
  switch (spec.kind) {
    case "bytes":
      if (!(value instanceof Uint8Array)) throw invalid(path, "a byte string");
      if (value.length < spec.min || value.length > spec.max) {
        throw invalid(path, lengthText(spec.min, spec.max, "bytes"), value.length);
      }
      // cbor-x hands out Node Buffers, whose slice() does not copy; give callers plain bytes.
      return value.constructor === Uint8Array
        ? value
        : new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    case "string":
      if (typeof value !== "string") throw invalid(path, "a text string");
      if (value.length < spec.min || value.length > spec.max) {
        throw invalid(path, lengthText(spec.min, spec.max, "characters"), value.length);
      }
      return value;
    case "uint":
      if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
        throw invalid(path, "a non-negative integer");
      }
      if (value > spec.max) throw invalid(path, `at most ${spec.max}`, value);
      return value;
    case "bool":
      if (typeof value !== "boolean") throw invalid(path, "a boolean");
      return value;
    case "array": {
      if (!Array.isArray(value)) throw invalid(path, "an array");
      if (value.length > spec.max) {
        throw invalid(path, `at most ${spec.max} elements`, value.length);
      }
      const out = new Array(value.length);
      for (let i = 0; i < value.length; i++) out[i] = check(value[i], spec.of, `${path}[${i}]`);
      return out;
    }
    case "tuple": {
      if (!Array.isArray(value) || value.length !== spec.fields.length) {
        throw invalid(path, `an array of ${spec.fields.length} fields`);
      }
      const out: Record<string, unknown> = {};
      spec.fields.forEach(([name, fs], i) => {
        out[name] = check(value[i], fs, `${path}.${name}`);
      });
      return out;
    }
  }
}

/** Inverse of check for encoding: validate a TypeScript value and lay it out positionally. */
function layout(value: unknown, spec: FieldSpec, path: string): unknown {
  switch (spec.kind) {
    case "tuple": {
      if (typeof value !== "object" || value === null) {
        throw new WireEncodeError(`${path} must be an object`);
      }
      const rec = value as Record<string, unknown>;
      return spec.fields.map(([name, fs]) => layout(rec[name], fs, `${path}.${name}`));
    }
    case "array": {
      if (!Array.isArray(value)) throw new WireEncodeError(`${path} must be an array`);
      if (value.length > spec.max) {
        throw new WireEncodeError(`${path} has ${value.length} elements, at most ${spec.max}`);
      }
      return value.map((v, i) => layout(v, spec.of, `${path}[${i}]`));
    }
    default:
      try {
        check(value, spec, path);
      } catch (err) {
        throw new WireEncodeError((err as Error).message);
      }
      // A Node Buffer would be tagged differently by some encoders; send plain bytes.
      if (value instanceof Uint8Array && value.constructor !== Uint8Array) {
        return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
      }
      return value;
  }
}

function lengthText(min: number, max: number, unit: string): string {
  return min === max ? `exactly ${min} ${unit}` : `${min}..${max} ${unit}`;
}

function invalid(path: string, expected: string, got?: number): WireDecodeError {
  return new WireDecodeError(
    "invalid-field",
    `${path} must be ${expected}${got === undefined ? "" : ` (got ${got})`}`,
  );
}

/** A family of message specs that share one decoder (one protocol). */
export class MessageSet<M extends { type: string }> {
  readonly #byTag = new Map<number, MessageSpec>();
  readonly #byType = new Map<string, MessageSpec>();

  constructor(readonly protocolName: string, specs: readonly MessageSpec[]) {
    for (const s of specs) {
      if (this.#byTag.has(s.tag) || this.#byType.has(s.type)) {
        throw new Error(`duplicate message ${s.type}/${s.tag} in ${protocolName}`);
      }
      this.#byTag.set(s.tag, s);
      this.#byType.set(s.type, s);
    }
  }

  /** The positional array for a message, validated against its schema. */
  toWire(msg: M): unknown[] {
    const spec = this.#byType.get(msg.type);
    if (spec === undefined) {
      throw new WireEncodeError(`${this.protocolName}: no message type ${msg.type}`);
    }
    const rec = msg as unknown as Record<string, unknown>;
    return [
      spec.tag,
      ...spec.fields.map(([name, fs]) => layout(rec[name], fs, `${spec.type}.${name}`)),
    ];
  }

  /** Validate a decoded CBOR value and turn it into a typed message. */
  fromWire(value: unknown): M {
    if (!Array.isArray(value) || value.length === 0) {
      throw new WireDecodeError("malformed", `${this.protocolName}: message is not a tagged array`);
    }
    const tag = value[0];
    const spec = typeof tag === "number" ? this.#byTag.get(tag) : undefined;
    if (spec === undefined) {
      throw new WireDecodeError(
        "unknown-type",
        `${this.protocolName}: unknown message type ${typeof tag === "number" ? tag : typeof tag}`,
      );
    }
    if (value.length !== spec.fields.length + 1) {
      throw new WireDecodeError(
        "malformed",
        `${this.protocolName}: ${spec.type} has ${
          value.length - 1
        } fields, expected ${spec.fields.length}`,
      );
    }
    const out: Record<string, unknown> = { type: spec.type };
    spec.fields.forEach(([name, fs], i) => {
      out[name] = check(value[i + 1], fs, `${spec.type}.${name}`);
    });
    return out as unknown as M;
  }
}
