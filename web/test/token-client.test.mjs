// token-client.js under Node's own test runner (`node --test web/test`): what each page load costs,
// what is stored where, and what happens when storage is refused. The service is a fake `fetch`
// that answers as the token service does (docs/api.md).
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { beforeEach, describe, test } from 'node:test';

import DirectLineTokenClient, { create, HANDLE_KEY, ServiceError } from '../token-client.mjs';

const HOUR = 3600 * 1000;

class MemoryStorage {
  constructor() {
    this.items = new Map();
  }
  getItem(key) {
    return this.items.has(key) ? this.items.get(key) : null;
  }
  setItem(key, value) {
    this.items.set(key, String(value));
  }
  removeItem(key) {
    this.items.delete(key);
  }
}

// Safari's private mode of old, or a full quota: reading works (and finds nothing), writing throws.
class RefusingStorage extends MemoryStorage {
  setItem() {
    throw new Error('QuotaExceededError');
  }
}

// The token service: each route answers from a queue the test fills, else as the service does.
class FakeService {
  constructor() {
    this.calls = [];
    this.queued = [];
    this.conversations = 0;
  }
  then(status, body) {
    this.queued.push({ status, body });
  }
  answer(path, request) {
    const body = request.body ? JSON.parse(request.body) : {};
    this.calls.push({ path, body, headers: request.headers || {} });
    if (this.queued.length) return this.queued.shift();
    if (path.endsWith('/speech/token')) {
      return { status: 200, body: { authorizationToken: `speech-${this.calls.length}`, region: 'westeurope', expires_in: 540 } };
    }
    const user = body.userHandle ? body.userHandle.replace('handle-of-', '') : `dl_user${this.calls.length}`;
    if (path.endsWith('/refresh')) {
      return { status: 200, body: { conversationId: 'c1', token: `refreshed-${this.calls.length}`, expires_in: 1800 } };
    }
    const conversationId = path.endsWith('/resume') ? 'c1' : `c${++this.conversations}`;
    return {
      status: 200,
      body: {
        conversationId,
        token: `token-${this.calls.length}`,
        expires_in: 1800,
        userId: user,
        domain: 'https://directline.botframework.com/v3/directline',
        userHandle: `handle-of-${user}`,
        conversationTicket: `ticket-${conversationId}`
      }
    };
  }
  get fetch() {
    return async (url, request) => {
      const { status, body } = this.answer(new URL(url, 'https://service.example').pathname, request);
      return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
    };
  }
  paths() {
    return this.calls.map((call) => call.path);
  }
}

let service;
let clock;
let local;
let session;

function client(overrides = {}) {
  return create({
    serviceUrl: 'https://service.example',
    fetch: service.fetch,
    now: () => clock,
    localStorage: local,
    sessionStorage: session,
    BroadcastChannel: null,
    ...overrides
  });
}

beforeEach(() => {
  service = new FakeService();
  clock = Date.UTC(2026, 11, 6, 9, 0, 0);
  local = new MemoryStorage();
  session = new MemoryStorage();
});

describe('a page load', () => {
  test('with nothing stored starts a new conversation and keeps the handle and the ticket', async () => {
    const started = await client().start();
    assert.equal(started.how, 'new');
    assert.deepEqual(service.paths(), ['/api/directline/token']);
    assert.equal(local.getItem(HANDLE_KEY), 'handle-of-dl_user1');
    assert.equal(JSON.parse(session.getItem('directline-token:conversation')).ticket, 'ticket-c1');
  });

  test('with more than half of the token left reuses it without a call', async () => {
    await client().start();
    clock += 14 * 60 * 1000; // 16 of 30 minutes left
    const again = await client().start();
    assert.equal(again.how, 'reused');
    assert.equal(service.calls.length, 1);
  });

  test('past half of the token refreshes it, the half taken from expires_in', async () => {
    await client().start();
    clock += 16 * 60 * 1000; // 14 of 30 minutes left
    const again = await client().start();
    assert.equal(again.how, 'refreshed');
    assert.deepEqual(service.paths(), ['/api/directline/token', '/api/directline/refresh']);
  });

  test("an hour-long token (Copilot Studio's) is reused for half an hour", async () => {
    service.then(200, { conversationId: 'c1', token: 't', expires_in: 3600, userId: 'dl_a', domain: 'd' });
    await client().start();
    clock += 29 * 60 * 1000;
    assert.equal((await client().start()).how, 'reused');
    clock += 2 * 60 * 1000;
    assert.equal((await client().start()).how, 'refreshed');
  });

  test('after the token expired resumes the same conversation with its ticket, as the same user', async () => {
    await client().start();
    clock += HOUR;
    const resumed = await client().start();
    assert.equal(resumed.how, 'resumed');
    assert.equal(resumed.conversationId, 'c1');
    const resume = service.calls[1];
    assert.equal(resume.path, '/api/directline/resume');
    assert.deepEqual(resume.body, { conversationTicket: 'ticket-c1', userHandle: 'handle-of-dl_user1' });
  });

  for (const code of ['invalid_ticket', 'ticket_not_yours', 'conversation_gone', 'resume_unavailable']) {
    test(`after ${code} starts a new conversation for the same user`, async () => {
      await client().start();
      clock += HOUR;
      const status = { invalid_ticket: 401, ticket_not_yours: 403, conversation_gone: 410, resume_unavailable: 409 }[code];
      service.then(status, { error: { code, message: 'start again' } });
      const started = await client().start();
      assert.equal(started.how, 'new');
      assert.deepEqual(service.paths(), ['/api/directline/token', '/api/directline/resume', '/api/directline/token']);
      assert.equal(service.calls[2].body.userHandle, 'handle-of-dl_user1');
    });
  }

  test('a failure that may pass keeps the conversation for the next try', async () => {
    await client().start();
    clock += HOUR;
    service.then(503, { error: { code: 'upstream_unavailable', message: 'busy' } });
    await assert.rejects(client().start(), (error) => error.code === 'upstream_unavailable');
    assert.equal(JSON.parse(session.getItem('directline-token:conversation')).conversationId, 'c1');
    assert.equal((await client().start()).how, 'resumed');
  });

  test('an expired handle starts over as a new user', async () => {
    local.setItem(HANDLE_KEY, 'handle-of-dl_old');
    service.then(401, { error: { code: 'unauthorized', message: 'expired' } });
    const started = await client().start();
    assert.equal(started.how, 'new');
    assert.equal(service.calls[1].body.userHandle, undefined);
    assert.equal(local.getItem(HANDLE_KEY), 'handle-of-dl_user2');
  });
});

describe('storage', () => {
  test('refused writes are kept in memory and read back, so a reconnect in the page resumes', async () => {
    local = new RefusingStorage();
    session = new RefusingStorage();
    const tokens = client();
    await tokens.start();
    clock += HOUR;
    const again = await tokens.start();
    assert.equal(again.how, 'resumed');
    assert.equal(again.conversationId, 'c1');
    assert.equal(service.calls[1].body.userHandle, 'handle-of-dl_user1');
  });

  test('no storage at all still works within the page', async () => {
    const tokens = client({ localStorage: null, sessionStorage: null });
    await tokens.start();
    clock += 60 * 1000;
    assert.equal((await tokens.start()).how, 'reused');
  });

  test("the user handle's key is the README snippet's, so either can take over from the other", () => {
    assert.equal(HANDLE_KEY, 'directline-token:userHandle');
  });
});

describe('errors', () => {
  test('carry the service code, status and Retry-After', async () => {
    const throttled = async () =>
      new Response(JSON.stringify({ error: { code: 'rate_limited', message: 'slow down' } }), {
        status: 429,
        headers: { 'Retry-After': '7' }
      });
    const error = await client({ fetch: throttled }).start().catch((caught) => caught);
    assert.ok(error instanceof ServiceError);
    assert.deepEqual([error.status, error.code, error.retryAfter], [429, 'rate_limited', 7]);
  });

  test('an unreachable service is network_error, status 0', async () => {
    const down = async () => {
      throw new TypeError('Failed to fetch');
    };
    const error = await client({ fetch: down }).start().catch((caught) => caught);
    assert.deepEqual([error.status, error.code], [0, 'network_error']);
  });
});

describe('the module forms', () => {
  test('the ES module and CommonJS give the one implementation', () => {
    const required = createRequire(import.meta.url)('../token-client.js');
    assert.equal(required.create, create);
    assert.equal(DirectLineTokenClient.create, create);
    assert.equal(globalThis.DirectLineTokenClient.create, create);
  });
});

describe('speech', () => {
  test('credentials are asked once and kept in the tab until a minute before their end', async () => {
    const tokens = client();
    assert.deepEqual(await tokens.speech(), { authorizationToken: 'speech-1', region: 'westeurope' });
    clock += 7 * 60 * 1000; // 540 s minus a minute is 8 minutes
    assert.equal((await client().speech()).authorizationToken, 'speech-1');
    clock += 61 * 1000;
    assert.equal((await tokens.speech()).authorizationToken, 'speech-2');
    assert.deepEqual(service.paths(), ['/api/speech/token', '/api/speech/token']);
  });

  test('a service without speech is null, and asked again only after ten minutes', async () => {
    service.then(404, { error: { code: 'speech_not_configured', message: 'no speech' } });
    assert.equal(await client().speech(), null);
    assert.equal(await client().speech(), null);
    assert.equal(service.calls.length, 1);
    clock += 11 * 60 * 1000;
    assert.notEqual(await client().speech(), null);
  });

  test('the request identifies the caller as for a token', async () => {
    local.setItem(HANDLE_KEY, 'handle-of-dl_ann');
    await client({ getIdentityToken: async () => 'site-token' }).speech();
    assert.equal(service.calls[0].body.userHandle, 'handle-of-dl_ann');
    assert.equal(service.calls[0].headers.Authorization, 'Bearer site-token');
  });

  test('other failures are errors, and nothing is kept', async () => {
    service.then(503, { error: { code: 'upstream_unavailable', message: 'busy' } });
    await assert.rejects(client().speech(), (error) => error.code === 'upstream_unavailable');
    assert.equal(session.getItem('directline-token:speech'), null);
  });
});
