// The official Node.js SDKs of OpenAI (with its Azure client) and Anthropic, run against batchctl's emulator: every
// call batchctl's users make through another language's client, checked the way those clients read the answers
// (types, pagination, errors, streamed results, webhook signatures). Run by emulator/TestOfficialNodeSDKs:
//   EMU=http://127.0.0.1:PORT WEBHOOK_PORT=N WEBHOOK_SECRET=whsec_... node compat.mjs
// It prints one "ok ..." line per part and "all ok" at the end; any failed check throws and exits non-zero.
import http from 'node:http';
import assert from 'node:assert/strict';
import OpenAI, { AzureOpenAI, toFile } from 'openai';
import Anthropic from '@anthropic-ai/sdk';

const base = process.env.EMU;
const secret = process.env.WEBHOOK_SECRET;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const terminal = ['completed', 'failed', 'expired', 'cancelled'];

// Webhook receiver: every event the emulator sends is checked with the SDK's own verifier.
const events = [];
const receiver = http.createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (c) => (body += c));
  req.on('end', async () => {
    try {
      const ev = await webhookClient.webhooks.unwrap(body, req.headers, secret);
      events.push(ev);
      res.writeHead(200).end();
    } catch (e) {
      events.push({ error: String(e) });
      res.writeHead(400).end();
    }
  });
});
const webhookClient = new OpenAI({ apiKey: 'unused', baseURL: base + '/v1' });
await new Promise((r) => receiver.listen(Number(process.env.WEBHOOK_PORT), '127.0.0.1', r));

const requestLines = (n, url, body) =>
  Array.from({ length: n }, (_, i) => JSON.stringify({ custom_id: `r-${i}`, method: 'POST', url, body: body(i) })).join('\n') + '\n';
const upload = async (client, name, text, extra = {}) =>
  client.files.create({ file: await toFile(Buffer.from(text), name), purpose: 'batch', ...extra });
async function finish(client, b) {
  for (let i = 0; !terminal.includes(b.status); i++) {
    assert.ok(i < 600, `batch ${b.id} still ${b.status}`);
    await sleep(50);
    b = await client.batches.retrieve(b.id);
  }
  return b;
}
async function outputLines(client, fileID) {
  const res = await client.files.content(fileID);
  return (await res.text()).trim().split('\n').map((l) => JSON.parse(l));
}

// --- OpenAI and Azure: the same calls through OpenAI and AzureOpenAI ---------------------------------------------
async function filesAndBatches(label, client, model, url, fileExpiry) {
  const f = await upload(client, 'in.jsonl', requestLines(7, url, (i) => ({ model, messages: [{ role: 'user', content: `hello ${i}` }], max_tokens: 5 })),
    { expires_after: { anchor: 'created_at', seconds: fileExpiry } });
  assert.equal(f.object, 'file');
  assert.equal(f.purpose, 'batch');
  assert.equal(f.filename, 'in.jsonl');
  assert.equal(f.expires_at, f.created_at + fileExpiry);
  const processed = await client.files.waitForProcessing(f.id, { pollInterval: 50 });
  assert.equal(processed.status, 'processed');

  const created = await client.batches.create({ input_file_id: f.id, endpoint: url, completion_window: '24h', metadata: { job: label } });
  assert.equal(created.object, 'batch');
  assert.deepEqual(created.metadata, { job: label });
  const b = await finish(client, created);
  assert.equal(b.status, 'completed', JSON.stringify(b));
  assert.deepEqual(b.request_counts, { total: 7, completed: 7, failed: 0 });
  const out = await outputLines(client, b.output_file_id);
  assert.equal(out.length, 7);
  assert.deepEqual(out.map((o) => o.custom_id).sort(), Array.from({ length: 7 }, (_, i) => `r-${i}`).sort());
  for (const o of out) {
    assert.equal(o.response.status_code, 200);
    assert.equal(o.response.body.object, 'chat.completion');
    assert.equal(typeof o.response.body.choices[0].message.content, 'string');
  }

  // A second batch, cancelled at once; its input file then deleted.
  const f2 = await upload(client, 'in2.jsonl', requestLines(3, url, () => ({ model, messages: [{ role: 'user', content: 'x' }] })),
    { expires_after: { anchor: 'created_at', seconds: fileExpiry } });
  const c = await client.batches.cancel((await client.batches.create({ input_file_id: f2.id, endpoint: url, completion_window: '24h' })).id);
  assert.ok(['cancelling', 'cancelled'].includes(c.status), c.status);
  assert.equal((await finish(client, c)).status, 'cancelled');
  const del = await client.files.delete(f2.id);
  assert.deepEqual([del.id, del.deleted], [f2.id, true]);
  await assert.rejects(client.files.retrieve(f2.id), (e) => e instanceof OpenAI.NotFoundError);

  // Pages of one: the SDK follows has_more / after to the end, in both directions.
  const ids = [];
  for await (const x of client.batches.list({ limit: 1 })) ids.push(x.id);
  assert.ok(ids.includes(b.id) && ids.includes(c.id), `listed ${ids}`);
  assert.equal(new Set(ids).size, ids.length, 'no batch listed twice');
  const inputs = [];
  for await (const x of client.files.list({ purpose: 'batch' })) inputs.push(x);
  assert.ok(inputs.some((x) => x.id === f.id) && inputs.every((x) => x.purpose === 'batch' && x.id !== f2.id));
  const page = await client.files.list({ order: 'asc', limit: 1 }); // the input file, then its batch's output
  assert.equal(page.data.length, 1);
  assert.ok(page.hasNextPage());
  const next = await page.getNextPage();
  assert.ok(next.data[0].created_at >= page.data[0].created_at && next.data[0].id !== page.data[0].id);

  await assert.rejects(client.batches.retrieve('batch_nope'), (e) => e instanceof OpenAI.NotFoundError);
  await assert.rejects(client.batches.create({ input_file_id: f.id, endpoint: url, completion_window: '48h' }),
    (e) => e instanceof OpenAI.BadRequestError);
  console.log(`ok ${label}: files, batches, output, cancel, delete, pages, errors`);
  return [b.id, c.id];
}

const oa = new OpenAI({ baseURL: base + '/v1', apiKey: 'test', maxRetries: 0 });
const az = new AzureOpenAI({ endpoint: base, apiKey: 'test', apiVersion: '2025-04-01-preview', maxRetries: 0 });
const [completedID, cancelledID] = await filesAndBatches('openai', oa, 'gpt-4o-mini', '/v1/chat/completions', 3600);
// Azure takes expires_after between 14 and 30 days.
await filesAndBatches('azure', az, 'my-deployment', '/chat/completions', 14 * 86400);
// Azure's v1 paths, through the plain OpenAI client as Azure's documentation shows.
const azv1 = new OpenAI({ baseURL: base + '/openai/v1', apiKey: 'test', maxRetries: 0 });
await filesAndBatches('azure v1', azv1, 'my-deployment', '/chat/completions', 14 * 86400);

// --- OpenAI: a file that fails validation, and every other endpoint -----------------------------------------------
{
  const f = await upload(oa, 'bad.jsonl', requestLines(1, '/v1/chat/completions', () => ({ model: 'gpt-4o-mini', messages: [] })) + 'not json\n');
  const b = await finish(oa, await oa.batches.create({ input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h' }));
  assert.equal(b.status, 'failed');
  assert.equal(b.errors.data[0].code, 'invalid_json_line');
  assert.equal(b.errors.data[0].line, 2);
  console.log('ok openai: validation failure with errors.data');
}
const endpoints = {
  '/v1/embeddings': [(i) => ({ model: 'text-embedding-3-small', input: `x ${i}` }), (body) => assert.equal(body.data[0].object, 'embedding')],
  '/v1/responses': [(i) => ({ model: 'gpt-4o-mini', input: `x ${i}` }), (body) => assert.equal(body.object, 'response')],
  '/v1/completions': [(i) => ({ model: 'gpt-3.5-turbo-instruct', prompt: `x ${i}` }), (body) => assert.equal(body.object, 'text_completion')],
  '/v1/moderations': [(i) => ({ model: 'omni-moderation-latest', input: `x ${i}` }), (body) => assert.equal(typeof body.results[0].flagged, 'boolean')],
  '/v1/images/generations': [(i) => ({ model: 'gpt-image-1', prompt: `x ${i}`, size: '1024x1024' }), (body) => assert.ok(body.data[0].b64_json.length > 0)],
};
for (const [url, [body, check]] of Object.entries(endpoints)) {
  const f = await upload(oa, 'e.jsonl', requestLines(2, url, body));
  const b = await finish(oa, await oa.batches.create({ input_file_id: f.id, endpoint: url, completion_window: '24h' }));
  assert.equal(b.status, 'completed', JSON.stringify(b));
  for (const o of await outputLines(oa, b.output_file_id)) check(o.response.body);
  console.log(`ok openai: ${url}`);
}

// --- Anthropic Message Batches -----------------------------------------------------------------------------------
const an = new Anthropic({ baseURL: base, apiKey: 'test', maxRetries: 0 });
const params = { model: 'claude-haiku-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] };
let mb = await an.messages.batches.create({ requests: Array.from({ length: 4 }, (_, i) => ({ custom_id: `a-${i}`, params })) });
assert.equal(mb.type, 'message_batch');
assert.equal(mb.processing_status, 'in_progress');
for (let i = 0; mb.processing_status !== 'ended'; i++) {
  assert.ok(i < 600, 'message batch never ended');
  await sleep(50);
  mb = await an.messages.batches.retrieve(mb.id);
}
assert.deepEqual(mb.request_counts, { processing: 0, succeeded: 4, errored: 0, canceled: 0, expired: 0 });
const results = [];
for await (const r of await an.messages.batches.results(mb.id)) results.push(r);
assert.deepEqual(results.map((r) => r.custom_id).sort(), ['a-0', 'a-1', 'a-2', 'a-3']);
for (const r of results) {
  assert.equal(r.result.type, 'succeeded');
  assert.equal(r.result.message.type, 'message');
  assert.equal(r.result.message.content[0].type, 'text');
}
const toCancel = await an.messages.batches.create({ requests: [{ custom_id: 'z', params }] });
assert.ok(['canceling', 'ended'].includes((await an.messages.batches.cancel(toCancel.id)).processing_status));
const listed = [];
for await (const x of an.messages.batches.list({ limit: 1 })) listed.push(x.id);
assert.ok(listed.includes(mb.id) && listed.includes(toCancel.id), `listed ${listed}`);
await assert.rejects(an.messages.batches.retrieve('msgbatch_nope'), (e) => e instanceof Anthropic.NotFoundError);
await assert.rejects(an.messages.batches.create({ requests: [{ custom_id: 'not valid!', params }] }), (e) => e instanceof Anthropic.BadRequestError);
console.log('ok anthropic: create, retrieve, results, cancel, pages, errors');

// --- Webhooks: the completed and the cancelled OpenAI batches, verified by the SDK --------------------------------
for (let i = 0; ; i++) {
  const types = new Map(events.filter((e) => e.data).map((e) => [e.data.id, e.type]));
  if (types.get(completedID) === 'batch.completed' && types.get(cancelledID) === 'batch.cancelled') break;
  assert.ok(i < 200, `webhook events: ${JSON.stringify(events)}`);
  await sleep(50);
}
assert.deepEqual(events.filter((e) => e.error), [], 'every event verified');
console.log(`ok webhooks: ${events.length} events verified by openai.webhooks.unwrap`);
receiver.close();
console.log('all ok');
