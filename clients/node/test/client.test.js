// The client against a running budget service ($BUDGET_ADDR, default 127.0.0.1:50051), in one
// org ($BUDGET_ORG, default a fresh one). Each test asserts what the client returned, then prints
// one JSON "fact" line on stdout that tests/test_node_client.py checks against the server.
//
//   node --test-reporter=spec --test-reporter-destination=stderr test/client.test.js
//   npm test   (same tests, through node --test)

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, test } from 'node:test';
import { BudgetClient, BudgetExceededError, InvalidArgumentError, int64 } from '../src/budget-client.js';

const org = process.env.BUDGET_ORG || `node-test-${randomUUID().slice(0, 8)}`;
const client = new BudgetClient(process.env.BUDGET_ADDR || '127.0.0.1:50051', { actor: 'node-client-test' });
after(() => client.close());

const USD = 1_000_000_000n;
const fact = (check, fields) => console.log(JSON.stringify({ check, org, ...fields }));
const newId = (prefix) => `${prefix}-${randomUUID()}`;

// A hard lifetime budget over one project of the org, so tests in the org never share budgets.
async function budget(id, limitNanos, selector = { project: id }) {
  return client.upsertBudget({ id, org, selector, limitNanos, period: 'PERIOD_NONE', mode: 'MODE_HARD' });
}

async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail('the call succeeded; it should have been refused');
}

test('reserve then commit charges the actual cost and gives back the rest of the hold', async () => {
  const id = 'node-commit';
  await budget(id, 10n * USD);
  const subject = { org, project: id, model: 'gpt-4o' };

  const byAmount = newId('amount');
  const held = await client.reserve({ reservationId: byAmount, subject, amountNanos: '300000000' });
  assert.equal(held.reservedNanos, '300000000');
  assert.deepEqual(held.budgets.map((b) => [b.budgetId, b.reservedNanos]), [[id, '300000000']]);
  const charged = await client.commit({ org, reservationId: byAmount, actualNanos: 123_456_789n });
  const { chargedNanos, releasedNanos, overageNanos } = charged;
  assert.deepEqual([chargedNanos, releasedNanos, overageNanos], ['123456789', '176543211', '0']);

  // Tokens in, the provider's own usage object out: the server prices both with the catalog.
  const byTokens = newId('tokens');
  const usage = { inputTokens: 1200, outputTokens: 800 };
  const tokenHold = await client.reserve({ reservationId: byTokens, subject, usage, ttlSeconds: 60 });
  assert.ok(BigInt(tokenHold.reservedNanos) > 0n, `a token estimate holds money: ${tokenHold.reservedNanos}`);
  const tokenCharge = await client.commit({
    org,
    reservationId: byTokens,
    providerUsageJson: JSON.stringify({ prompt_tokens: 1200, completion_tokens: 310 }),
  });
  assert.equal(tokenCharge.usage.inputTokens, '1200');
  assert.equal(tokenCharge.usage.outputTokens, '310');
  assert.equal(tokenCharge.usage.cacheWrite1hTokens, '0');
  const tokenCharged = BigInt(tokenCharge.chargedNanos);
  assert.ok(tokenCharged > 0n && tokenCharged < BigInt(tokenHold.reservedNanos), `${tokenCharged}`);

  const released = newId('released');
  await client.reserve({ reservationId: released, subject, amountNanos: 5n * USD });
  const release = await client.release({ org, reservationId: released });
  assert.deepEqual(release, { releasedNanos: String(5n * USD) });

  const status = await client.getBudgetStatus({ org, budgetId: id });
  const spent = BigInt(charged.chargedNanos) + BigInt(tokenCharge.chargedNanos);
  assert.deepEqual([status.spentNanos, status.reservedNanos], [String(spent), '0']);
  fact('commit', { budgetId: id, spentNanos: String(spent), tokenChargedNanos: tokenCharge.chargedNanos });
});

test('a refusal is a BudgetExceededError naming every refusing budget with its room and limit', async () => {
  const project = 'node-refusal';
  await budget('node-refusal-project', USD, { project });
  await budget('node-refusal-user', USD / 2n, { project, user: 'u1' });
  const subject = { org, project, user: 'u1' };
  const spend = newId('spend');
  await client.reserve({ reservationId: spend, subject, amountNanos: USD / 10n });
  await client.commit({ org, reservationId: spend, actualNanos: USD / 10n });

  const tooMuch = client.reserve({ reservationId: newId('refused'), subject, amountNanos: 2n * USD });
  const error = await rejection(tooMuch);
  assert.ok(error instanceof BudgetExceededError, `${error.name}: ${error.message}`);
  assert.equal(error.codeName, 'RESOURCE_EXHAUSTED');
  assert.equal(error.reason, 'BUDGET_EXCEEDED');
  const refusals = [...error.refusals].sort((a, b) => a.budgetId.localeCompare(b.budgetId));
  assert.deepEqual(refusals, [
    { budgetId: 'node-refusal-project', remainingNanos: '900000000', limitNanos: '1000000000' },
    { budgetId: 'node-refusal-user', remainingNanos: '400000000', limitNanos: '500000000' },
  ]);
  const info = error.detail('google.rpc.ErrorInfo');
  assert.deepEqual(info.metadata.budget_ids.split(',').sort(), ['node-refusal-project', 'node-refusal-user']);
  fact('refusal', { refusals, reason: error.reason });
});

test('bad input is an InvalidArgumentError naming the field, and changes nothing', async () => {
  const badId = await rejection(
    client.reserve({ reservationId: 'not ok!', subject: { org }, amountNanos: 1 }),
  );
  assert.ok(badId instanceof InvalidArgumentError, `${badId.name}: ${badId.message}`);
  assert.equal(badId.codeName, 'INVALID_ARGUMENT');
  assert.equal(badId.fieldViolations[0].field, 'reservation_id');
  assert.match(badId.fieldViolations[0].description, /character/);

  const badLimit = await rejection(budget('node-invalid', '-1'));
  assert.ok(badLimit instanceof InvalidArgumentError, `${badLimit.name}: ${badLimit.message}`);
  assert.deepEqual(badLimit.fieldViolations.map((v) => v.field), ['budget.limit_nanos']);
  fact('invalid_argument', {
    fields: [badId.fieldViolations[0].field, badLimit.fieldViolations[0].field],
    budgetId: 'node-invalid',
  });
});

test('int64 amounts above 2^53 nanos keep every digit both ways', async () => {
  const id = 'node-int64';
  const limit = 2n ** 60n + 1n; // as a JS number this would be ...976: one nano lost
  const created = await budget(id, limit);
  assert.equal(created.limitNanos, '1152921504606846977');

  const rid = newId('big');
  await client.reserve({ reservationId: rid, subject: { org, project: id }, amountNanos: '123456789' });
  await client.commit({ org, reservationId: rid, actualNanos: '123456789' });
  const status = await client.getBudgetStatus({ org, budgetId: id });
  assert.equal(status.budget.limitNanos, '1152921504606846977');
  assert.equal(status.spentNanos, '123456789');
  assert.equal(status.remainingNanos, String(limit - 123_456_789n)); // 1152921504483390188
  const { remainingNanos } = status;
  fact('int64', { budgetId: id, limitNanos: status.budget.limitNanos, remainingNanos });
});

test('lossy or misspelt input is refused before anything is sent', async () => {
  assert.throws(() => int64(2 ** 60, 'limitNanos'), TypeError);
  assert.equal(int64(2n ** 60n + 1n), '1152921504606846977');
  const subject = { org, project: 'node-never-sent' };
  await assert.rejects(budget('node-lossy', 2 ** 60), /lose digits/);
  const both = client.reserve({ reservationId: newId('x'), subject, amountNanos: 1, usage: {} });
  await assert.rejects(both, /exactly one/);
  await assert.rejects(
    client.reserve({ reservationId: newId('x'), subject, usage: { input_tokens: 1200 } }),
    /unknown field\(s\) input_tokens/,
  );
  fact('client_side', { budgetId: 'node-lossy' });
});
