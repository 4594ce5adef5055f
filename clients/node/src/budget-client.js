// A small promise-based client for budget.v1 (BudgetService and BudgetAdminService).
//
// Requests and responses are the proto messages as plain objects with camelCase field names
// (proto-loader's convention). Every int64 (money in nano-USD, token counts) is a string of
// digits in responses, and may be a string, a BigInt or a safe-integer number in requests:
// a JS number above 2^53 has already lost digits, so it is refused, never sent.

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import { toBudgetError } from './errors.js';

export {
  BudgetError,
  BudgetExceededError,
  InvalidArgumentError,
  decodeStatusDetails,
  toBudgetError,
} from './errors.js';

export const DEFAULT_ADDR = '127.0.0.1:50051';
// The repository's protos/ folder: the contract, loaded as is (no generated code to go stale).
export const PROTOS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../protos');

const packageDefinition = protoLoader.loadSync('budget/v1/budget.proto', {
  includeDirs: [PROTOS_DIR], // google/protobuf/* imports resolve to protobufjs's bundled copies
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const budgetV1 = grpc.loadPackageDefinition(packageDefinition).budget.v1;

const SUBJECT_FIELDS = ['org', 'team', 'project', 'user', 'provider', 'model', 'tags'];
// proto-loader camel-cases cache_write_1h_tokens as cacheWrite_1hTokens; the proto3 JSON name
// (and this client's) is cacheWrite1hTokens.
const USAGE_FIELDS = {
  inputTokens: 'inputTokens',
  outputTokens: 'outputTokens',
  cachedInputTokens: 'cachedInputTokens',
  cacheWriteTokens: 'cacheWriteTokens',
  reasoningTokens: 'reasoningTokens',
  cacheWrite1hTokens: 'cacheWrite_1hTokens',
};
const BUDGET_INT64_FIELDS = ['limitNanos', 'overdraftNanos', 'version'];

/** An int64 as a string of digits: from a string of digits, a BigInt or a safe-integer number. */
export function int64(value, name = 'value') {
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'string' && /^-?\d+$/.test(value)) return value;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value);
  throw new TypeError(
    `${name} must be an integer as a string, a BigInt or a safe-integer number, ` +
      `not ${typeof value} ${String(value)}: numbers above 2^53 lose digits, pass them as strings`,
  );
}

/** The client: one channel to the budget service, both of its gRPC services. */
export class BudgetClient {
  /**
   * @param {string} [address] host:port, default $BUDGET_ADDR or 127.0.0.1:50051
   * @param {object} [options] credentials (default insecure), deadlineMs per call (default 5000),
   *   actor (sent as x-actor on admin calls, recorded in the audit trail), channelOptions
   */
  constructor(address = process.env.BUDGET_ADDR || DEFAULT_ADDR, options = {}) {
    const {
      credentials = grpc.credentials.createInsecure(),
      deadlineMs = 5000,
      actor,
      channelOptions = {},
    } = options;
    this.address = address;
    this.deadlineMs = deadlineMs;
    this.actor = actor;
    this.budgets = new budgetV1.BudgetService(address, credentials, channelOptions);
    // The admin stub shares the first stub's channel.
    this.admin = new budgetV1.BudgetAdminService(address, credentials, {
      ...channelOptions,
      channelOverride: this.budgets.getChannel(),
    });
  }

  /**
   * Hold an estimated cost: exactly one of amountNanos or usage ({inputTokens, outputTokens, ...},
   * priced with subject.model). Refused with a BudgetExceededError.
   */
  async reserve({ reservationId, subject, amountNanos, usage, ttlSeconds, priority }) {
    if ((amountNanos === undefined) === (usage === undefined)) {
      throw new TypeError('reserve needs exactly one of amountNanos or usage');
    }
    const request = { reservationId, subject: toSubject(subject), priority };
    if (amountNanos !== undefined) request.amountNanos = int64(amountNanos, 'amountNanos');
    else request.usage = toUsage(usage);
    if (ttlSeconds !== undefined) request.ttl = { seconds: int64(ttlSeconds, 'ttlSeconds'), nanos: 0 };
    return this.#call(this.budgets, 'Reserve', request);
  }

  /** Charge a reservation: exactly one of actualNanos, usage or providerUsageJson (a string). */
  async commit({ org, reservationId, actualNanos, usage, providerUsageJson, latencyMs }) {
    const given = [actualNanos, usage, providerUsageJson].filter((v) => v !== undefined).length;
    if (given !== 1) {
      throw new TypeError('commit needs exactly one of actualNanos, usage or providerUsageJson');
    }
    const request = { org, reservationId };
    if (actualNanos !== undefined) request.actualNanos = int64(actualNanos, 'actualNanos');
    else if (usage !== undefined) request.usage = toUsage(usage);
    else request.providerUsageJson = providerUsageJson;
    if (latencyMs !== undefined) request.latencyMs = int64(latencyMs, 'latencyMs');
    return this.#call(this.budgets, 'Commit', request);
  }

  /** Void a hold (the model call failed); resolves to {releasedNanos}. */
  async release({ org, reservationId }) {
    return this.#call(this.budgets, 'Release', { org, reservationId });
  }

  /** A budget's spent, reserved and remaining nanos in its current period. */
  async getBudgetStatus({ org, budgetId }) {
    return this.#call(this.admin, 'GetBudgetStatus', { org, budgetId }, true);
  }

  /** Create or replace a budget ({id, org, selector, limitNanos, period, mode, ...}). */
  async upsertBudget(budget) {
    const wire = { ...budget };
    for (const field of BUDGET_INT64_FIELDS) {
      if (wire[field] !== undefined) wire[field] = int64(wire[field], `budget.${field}`);
    }
    if (wire.unknownModelPrice) {
      const { inputNanosPerMillion = 0, outputNanosPerMillion = 0 } = wire.unknownModelPrice;
      wire.unknownModelPrice = {
        inputNanosPerMillion: int64(inputNanosPerMillion, 'unknownModelPrice.inputNanosPerMillion'),
        outputNanosPerMillion: int64(outputNanosPerMillion, 'unknownModelPrice.outputNanosPerMillion'),
      };
    }
    return this.#call(this.admin, 'UpsertBudget', { budget: wire }, true);
  }

  /** Close the channel; pending calls fail with CANCELLED. */
  close() {
    this.budgets.close();
  }

  #call(stub, method, request, isAdmin = false) {
    const metadata = new grpc.Metadata();
    if (isAdmin && this.actor) metadata.set('x-actor', this.actor);
    const deadline = new Date(Date.now() + this.deadlineMs);
    return new Promise((resolve, reject) => {
      stub[method](request, metadata, { deadline }, (error, response) => {
        if (!error) resolve(fromWire(response));
        else reject(toBudgetErrorOr(error));
      });
    });
  }
}

function toSubject(subject) {
  if (subject === null || typeof subject !== 'object') {
    throw new TypeError('subject must be an object with at least org');
  }
  rejectUnknown(subject, SUBJECT_FIELDS, 'subject');
  return subject;
}

function toUsage(usage) {
  rejectUnknown(usage, Object.keys(USAGE_FIELDS), 'usage');
  return Object.fromEntries(
    Object.entries(usage).map(([name, value]) => [USAGE_FIELDS[name], int64(value, `usage.${name}`)]),
  );
}

// protobufjs drops unknown keys without a word: a misspelt token count would reserve nothing.
function rejectUnknown(object, allowed, what) {
  const unknown = Object.keys(object).filter((key) => !allowed.includes(key));
  if (unknown.length) {
    throw new TypeError(`${what} has unknown field(s) ${unknown.join(', ')}; known: ${allowed.join(', ')}`);
  }
}

// A trailer this client cannot decode still fails the call with gRPC's own error, never hangs it.
function toBudgetErrorOr(serviceError) {
  try {
    return toBudgetError(serviceError);
  } catch (decodeError) {
    serviceError.decodeError = decodeError;
    return serviceError;
  }
}

// Responses carry Usage (CommitResponse.usage): give it the same field name requests use.
function fromWire(response) {
  if (response?.usage && 'cacheWrite_1hTokens' in response.usage) {
    const { cacheWrite_1hTokens: cacheWrite1hTokens, ...rest } = response.usage;
    response.usage = { ...rest, cacheWrite1hTokens };
  }
  return response;
}
