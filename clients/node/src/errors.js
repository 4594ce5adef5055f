// The client's errors, decoded from the gRPC status and its google.rpc details.
//
// BudgetError                 any failed call: code, codeName, details (decoded google.rpc messages)
// ├── BudgetExceededError     RESOURCE_EXHAUSTED: reason, refusals [{budgetId, remainingNanos, limitNanos}]
// └── InvalidArgumentError    INVALID_ARGUMENT: fieldViolations [{field, description}]
//
// The server sends a google.rpc.Status in the `grpc-status-details-bin` trailer; its details are
// Any messages (QuotaFailure, ErrorInfo, BadRequest). Money stays a string of digits throughout.

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';

const VENDORED_PROTOS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../protos');
const STATUS_DETAILS_KEY = 'grpc-status-details-bin';
const TO_OBJECT = { longs: String, enums: String, defaults: true };

// google/protobuf/{any,duration}.proto come bundled with protobufjs; only google/rpc is vendored.
const rpcTypes = new protobuf.Root();
rpcTypes.resolvePath = (_origin, target) => path.join(VENDORED_PROTOS, target);
rpcTypes.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto']);
rpcTypes.resolveAll();
const Status = rpcTypes.lookupType('google.rpc.Status');

/** A failed call: the gRPC code (number and name), the message and the decoded details. */
export class BudgetError extends Error {
  constructor(message, { code, details = [], metadata, cause } = {}) {
    super(message, { cause });
    this.name = 'BudgetError';
    this.code = code;
    this.codeName = grpc.status[code] ?? 'UNKNOWN'; // a TypeScript enum: it maps codes to names too
    // [{type: 'google.rpc.QuotaFailure', ...fields}] for every detail this client knows.
    this.details = details;
    this.metadata = metadata;
  }

  /** The first detail of a google.rpc type, e.g. detail('google.rpc.ErrorInfo'), or undefined. */
  detail(type) {
    return this.details.find((d) => d.type === type);
  }
}

/** A hard budget had no room: every refusing budget, with its room left and its limit. */
export class BudgetExceededError extends BudgetError {
  constructor(message, options) {
    super(message, options);
    this.name = 'BudgetExceededError';
    const info = this.detail('google.rpc.ErrorInfo');
    this.reason = info?.reason ?? '';
    this.refusals = refusalsFrom(this.detail('google.rpc.QuotaFailure'), info);
  }
}

/** Bad input, nothing changed: the fields the server named and why. */
export class InvalidArgumentError extends BudgetError {
  constructor(message, options) {
    super(message, options);
    this.name = 'InvalidArgumentError';
    const badRequest = this.detail('google.rpc.BadRequest');
    this.fieldViolations = (badRequest?.fieldViolations ?? []).map(({ field, description }) => ({
      field,
      description,
    }));
  }
}

/** The google.rpc.Status of a failed call's trailers, details decoded, or null when absent. */
export function decodeStatusDetails(metadata) {
  const [raw] = metadata?.get(STATUS_DETAILS_KEY) ?? [];
  if (!raw) return null;
  const status = Status.decode(raw);
  return {
    code: status.code,
    message: status.message,
    details: status.details.map(unpackAny).filter(Boolean),
  };
}

/** The BudgetError (or subclass) for a @grpc/grpc-js ServiceError. */
export function toBudgetError(serviceError) {
  const status = decodeStatusDetails(serviceError.metadata);
  const options = {
    code: serviceError.code,
    details: status?.details ?? [],
    metadata: serviceError.metadata,
    cause: serviceError,
  };
  const message = status?.message || serviceError.details || serviceError.message;
  switch (serviceError.code) {
    case grpc.status.RESOURCE_EXHAUSTED:
      return new BudgetExceededError(message, options);
    case grpc.status.INVALID_ARGUMENT:
      return new InvalidArgumentError(message, options);
    default:
      return new BudgetError(message, options);
  }
}

function unpackAny(any) {
  // protobufjs's bundled Any keeps the proto's snake_case field names.
  const typeUrl = any.type_url ?? any.typeUrl ?? '';
  const typeName = typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
  let type;
  try {
    type = rpcTypes.lookupType(typeName);
  } catch {
    return null; // a detail type this client does not know: skipped, never fatal
  }
  return { type: typeName, ...type.toObject(type.decode(any.value), TO_OBJECT) };
}

// "remaining_nanos=750000000 limit_nanos=1000000000" -> {remaining_nanos: '750000000', ...}
function numbersIn(description) {
  return Object.fromEntries([...description.matchAll(/(\w+)=(-?\d+)/g)].map((m) => [m[1], m[2]]));
}

function refusalsFrom(quotaFailure, errorInfo) {
  if (quotaFailure?.violations?.length) {
    return quotaFailure.violations.map(({ subject, description }) => {
      const numbers = numbersIn(description);
      return {
        budgetId: subject,
        remainingNanos: numbers.remaining_nanos ?? null,
        limitNanos: numbers.limit_nanos ?? null,
      };
    });
  }
  // Without a QuotaFailure, ErrorInfo's metadata still names the budgets (no limits there).
  const ids = errorInfo?.metadata?.budget_ids?.split(',').filter(Boolean) ?? [];
  const remaining = errorInfo?.metadata?.remaining_nanos?.split(',') ?? [];
  return ids.map((budgetId, i) => ({ budgetId, remainingNanos: remaining[i] ?? null, limitNanos: null }));
}
