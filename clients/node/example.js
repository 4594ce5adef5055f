// The gateway's loop in a few lines: set a budget, reserve before a model call, commit after it,
// and see what a refusal says. One JSON line per step on stdout (int64 amounts as strings).
//
//   BUDGET_ADDR=127.0.0.1:50051 BUDGET_ORG=demo node example.js
//
// Exits 0 when every step went as expected (the last reserve is meant to be refused), 1 otherwise.

import { randomUUID } from 'node:crypto';
import { BudgetClient, BudgetExceededError } from './src/budget-client.js';

const USD = 1_000_000_000n; // nano-USD per dollar; BigInt arithmetic, never floats, for money
const org = process.env.BUDGET_ORG || `node-example-${randomUUID().slice(0, 8)}`;
const budgetId = 'node-example-search';
const subject = { org, team: 'search', model: 'gpt-4o' };
const print = (step, fields) => console.log(JSON.stringify({ step, ...fields }));

// The address defaults to $BUDGET_ADDR, else 127.0.0.1:50051.
const client = new BudgetClient(undefined, { actor: 'node-example' });
try {
  // $1.00 for team "search", for all time (PERIOD_NONE): hard, so it refuses what would go over.
  const budget = await client.upsertBudget({
    id: budgetId,
    org,
    selector: { team: 'search' },
    limitNanos: USD,
    period: 'PERIOD_NONE',
    mode: 'MODE_HARD',
  });
  print('upsert_budget', { org, budgetId: budget.id, limitNanos: budget.limitNanos });

  // Before the model call: hold the estimate ($0.40).
  const reservationId = `node-example-${randomUUID()}`;
  const estimate = (40n * USD) / 100n;
  const hold = await client.reserve({ reservationId, subject, amountNanos: estimate, ttlSeconds: 60 });
  print('reserve', {
    reservationId: hold.reservationId,
    reservedNanos: hold.reservedNanos,
    budgets: hold.budgets.map(({ budgetId: id, remainingNanos }) => ({ budgetId: id, remainingNanos })),
  });

  // After it: charge what it cost ($0.25); the rest of the hold goes back.
  const charge = await client.commit({ org, reservationId, actualNanos: (25n * USD) / 100n });
  print('commit', {
    reservationId,
    chargedNanos: charge.chargedNanos,
    releasedNanos: charge.releasedNanos,
    overageNanos: charge.overageNanos,
  });

  // $0.80 more does not fit in the $0.75 left: refused, naming the budget and its room.
  try {
    const tooMuch = (80n * USD) / 100n;
    await client.reserve({ reservationId: `node-example-${randomUUID()}`, subject, amountNanos: tooMuch });
    print('unexpected_admit', {});
    process.exitCode = 1;
  } catch (error) {
    if (!(error instanceof BudgetExceededError)) throw error;
    const { codeName: code, reason, refusals, message } = error;
    print('refused', { code, reason, refusals, message });
  }

  const status = await client.getBudgetStatus({ org, budgetId });
  print('status', {
    budgetId,
    spentNanos: status.spentNanos,
    reservedNanos: status.reservedNanos,
    remainingNanos: status.remainingNanos,
  });
} catch (error) {
  print('error', { name: error.name, code: error.codeName, message: error.message });
  process.exitCode = 1;
} finally {
  client.close();
}
