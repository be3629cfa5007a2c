/*
 * token-client.js: gets Direct Line tokens for Web Chat from the token service, and keeps the
 * conversation across reloads and after its token expired. No dependencies; copy it into your site.
 *
 *   <script src="token-client.js"></script>        defines window.DirectLineTokenClient
 *   import { create } from './token-client.mjs';   the same, as an ES module
 *   const { create } = require('./token-client.js'); CommonJS (Node, bundlers)
 *   Types: token-client.d.ts (script, CommonJS) and token-client.d.mts (module).
 *
 *   const client = DirectLineTokenClient.create({ serviceUrl: '' });   // '' = same origin
 *   const s = await client.start();   // {token, domain, conversationId, watermark, how}
 *   const directLine = WebChat.createDirectLine({
 *     token: s.token, domain: s.domain, conversationId: s.conversationId, watermark: s.watermark
 *   });
 *   // on every incoming activity: client.remember(directLine, activity)   (see chat.js)
 *
 * Options of create(): serviceUrl, userName (sent in anonymous mode), getIdentityToken (async,
 * returns the site's sign-in token for AUTH_MODE=jwt), storagePrefix, and for tests and other hosts
 * fetch, now, localStorage, sessionStorage, BroadcastChannel (null: no duplicate-tab check).
 *
 * start() decides what a page load costs, by what the tab holds:
 *   - a token with more than half of its life left: reused, no call to the service ("reused");
 *   - a token near its end: refreshed through /api/directline/refresh ("refreshed"; should that
 *     fail, the token is still used while it lasts);
 *   - a token that has expired (the tab slept, the page came back an hour later): the same
 *     conversation resumed through /api/directline/resume with its ticket ("resumed");
 *   - nothing, or a ticket the service refuses (invalid_ticket, ticket_not_yours,
 *     conversation_gone, or resume_unavailable on a Direct Line site with Enhanced authentication):
 *     a new conversation through /api/directline/token ("new"), for the same user (the handle or
 *     sign-in is sent again).
 *
 * What it stores, and where (prefix `directline-token` unless storagePrefix says otherwise; the
 * README's short snippet uses the same `directline-token:userHandle`, so either can take over):
 *   localStorage   `<prefix>:userHandle`    the signed handle the service returns in anonymous mode;
 *                                           sending it back gets the same user id ("remember me"
 *                                           without a login), across tabs and browser restarts.
 *   sessionStorage `<prefix>:speech`        {authorizationToken, region, until} for the microphone, or
 *                                           {none, until} where the service has no speech.
 *   sessionStorage `<prefix>:conversation`  {token, conversationId, expiresAt, lifetime, domain,
 *                                           watermark, ticket}. Session storage is the tab's own: it
 *                                           survives a reload but not closing the tab, so a token
 *                                           and its ticket never outlive the tab on disk, and two
 *                                           tabs hold two conversations instead of fighting over one
 *                                           (Direct Line closes all but one WebSocket of a
 *                                           conversation). A duplicated tab starts with a copy of
 *                                           the session storage: it asks the other tabs first
 *                                           (BroadcastChannel) and starts its own conversation when
 *                                           another tab already holds this one.
 *
 * Errors reject with a DirectLineTokenClient.ServiceError carrying the service's {status, code,
 * message, retryAfter}; no message ever contains a token.
 */
(function (global) {
  'use strict';

  var DEFAULT_PREFIX = 'directline-token';
  var EXPIRY_MARGIN_MS = 30 * 1000; // a token this close to its end may die before the page uses it
  // (or a tenth of its life, for tokens shorter than five minutes: the demo's, made to expire fast)
  var CLAIM_WAIT_MS = 100; // how long a tab waits for another tab to say it holds the conversation
  var SPEECH_MARGIN_MS = 60 * 1000; // speech credentials are asked again a minute before their end
  var SPEECH_ABSENT_MS = 10 * 60 * 1000; // "no speech here" is asked again after ten minutes
  var START_OVER = ['invalid_ticket', 'ticket_not_yours', 'conversation_gone', 'resume_unavailable'];

  class ServiceError extends Error {
    constructor(status, code, message, retryAfter) {
      super(message);
      this.name = 'DirectLineTokenServiceError';
      this.status = status; // 0 when the service could not be reached
      this.code = code;
      this.retryAfter = retryAfter; // seconds, when the service said
    }
  }

  // Storage can be missing, or refuse to read or write (privacy modes, disabled cookies, a full
  // quota): then what could not be stored is kept in memory for the life of the page, and read back
  // from there, so the page still reconnects as the same user and conversation until it is closed.
  function safeStorage(storage) {
    var memory = {};
    return {
      get: function (key) {
        if (Object.prototype.hasOwnProperty.call(memory, key)) return memory[key];
        try {
          return storage ? storage.getItem(key) : null;
        } catch (_) {
          return null;
        }
      },
      set: function (key, value) {
        try {
          if (storage) {
            storage.setItem(key, value);
            delete memory[key]; // stored for real: the storage is the one copy
            return;
          }
        } catch (_) {
          /* refused: keep it in memory below */
        }
        memory[key] = value;
      },
      remove: function (key) {
        delete memory[key];
        try {
          if (storage) storage.removeItem(key);
        } catch (_) {
          /* nothing stored there */
        }
      }
    };
  }

  function readJson(store, key) {
    try {
      var value = JSON.parse(store.get(key) || 'null');
      return value && typeof value === 'object' ? value : null;
    } catch (_) {
      return null;
    }
  }

  // Direct Line tokens are JWTs; their `iat` and `exp` tell the life of a token Web Chat renewed.
  function jwtClaims(token) {
    try {
      var part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      var claims = JSON.parse(atob(part + '==='.slice((part.length + 3) % 4)));
      return claims && typeof claims === 'object' ? claims : {};
    } catch (_) {
      return {};
    }
  }

  // Real Direct Line and the emulator number activities `<conversationId>|0000042`.
  function watermarkFromId(id) {
    var match = /\|0*(\d+)$/.exec(id || '');
    return match ? match[1] : null;
  }

  // This page's origin when the service lives on another one, else null. A browser does not tell
  // a page why a cross-origin request failed: a service that is down and one whose ALLOWED_ORIGINS
  // does not list this origin look the same from here.
  function foreignPageOrigin(serviceUrl) {
    try {
      var page = global.location.origin;
      return serviceUrl && new URL(serviceUrl, global.location.href).origin !== page ? page : null;
    } catch (_) {
      return null;
    }
  }

  function create(options) {
    options = options || {};
    var serviceUrl = (options.serviceUrl || '').replace(/\/+$/, '');
    var prefix = options.storagePrefix || DEFAULT_PREFIX;
    var now = options.now || Date.now;
    var fetchFn = options.fetch || global.fetch.bind(global);
    var local = safeStorage(options.localStorage || global.localStorage);
    var session = safeStorage(options.sessionStorage || global.sessionStorage);
    // null turns the duplicate-tab check off (a test, or a host without BroadcastChannel).
    var Channel = 'BroadcastChannel' in options ? options.BroadcastChannel : global.BroadcastChannel;
    var HANDLE = prefix + ':userHandle';
    var CONVERSATION = prefix + ':conversation';
    var SPEECH = prefix + ':speech';
    var channel = Channel ? new Channel(prefix) : null;
    var held = null; // the conversation this tab holds, which it tells other tabs about
    var tab = Math.random().toString(36).slice(2); // messages of this tab's own are not news

    if (channel) {
      channel.onmessage = function (event) {
        var data = event.data || {};
        if (data.type === 'who-holds' && data.tab !== tab && held && data.conversationId === held) {
          channel.postMessage({ type: 'held', conversationId: held, tab: tab });
        }
      };
    }

    // Whether another open tab holds this conversation (this one being a duplicate of it).
    function heldElsewhere(conversationId) {
      if (!channel) return Promise.resolve(false);
      return new Promise(function (resolve) {
        var asking = new Channel(prefix);
        var timer = setTimeout(function () {
          asking.close();
          resolve(false);
        }, CLAIM_WAIT_MS);
        asking.onmessage = function (event) {
          var data = event.data || {};
          if (data.type === 'held' && data.tab !== tab && data.conversationId === conversationId) {
            clearTimeout(timer);
            asking.close();
            resolve(true);
          }
        };
        asking.postMessage({ type: 'who-holds', conversationId: conversationId, tab: tab });
      });
    }

    async function call(path, init, isAnswer) {
      var response;
      try {
        var request = Object.assign({ method: 'POST', cache: 'no-store' }, init);
        response = await fetchFn(serviceUrl + path, request);
      } catch (_) {
        var where = 'The token service at ' + (serviceUrl || 'this site');
        var origin = foreignPageOrigin(serviceUrl);
        var message = origin
          ? where + ' could not be reached, or it does not accept requests from ' + origin +
            ' (its ALLOWED_ORIGINS setting must list this origin).'
          : where + ' could not be reached.';
        throw new ServiceError(0, 'network_error', message);
      }
      var body = null;
      try {
        body = await response.json();
      } catch (_) {
        /* not JSON: reported below */
      }
      var answered = isAnswer || function (b) { return b.token && b.conversationId; };
      if (response.ok && body && answered(body)) return body;
      var error = (body && body.error) || {};
      throw new ServiceError(
        response.status,
        typeof error.code === 'string' ? error.code : 'http_' + response.status,
        typeof error.message === 'string'
          ? error.message
          : 'The token service gave an unexpected answer (HTTP ' + response.status + ').',
        Number(response.headers.get('Retry-After')) || undefined
      );
    }

    // The identity part of a request: the remembered handle (anonymous mode) and the site's
    // sign-in token (jwt mode).
    async function identified(fields) {
      var request = Object.assign({}, fields);
      var handle = local.get(HANDLE);
      if (handle) request.userHandle = handle;
      if (options.userName) request.userName = options.userName;
      var headers = { 'Content-Type': 'application/json' };
      var identity = options.getIdentityToken ? await options.getIdentityToken() : null;
      if (identity) headers.Authorization = 'Bearer ' + identity;
      return { headers: headers, body: JSON.stringify(request), handle: handle };
    }

    // Keep what an answer of the token or resume route says: the handle, and the conversation.
    function keep(body, previous) {
      if (body.userHandle) local.set(HANDLE, body.userHandle);
      var lifetime = typeof body.expires_in === 'number' ? body.expires_in * 1000 : null;
      var conversation = {
        token: body.token,
        conversationId: body.conversationId,
        expiresAt: lifetime ? now() + lifetime : (jwtClaims(body.token).exp || 0) * 1000,
        lifetime: lifetime || (previous && previous.lifetime) || 0,
        domain: body.domain || (previous && previous.domain),
        watermark: (previous && previous.watermark) || '',
        ticket: body.conversationTicket || (previous && previous.ticket) || null
      };
      session.set(CONVERSATION, JSON.stringify(conversation));
      held = conversation.conversationId;
      return conversation;
    }

    async function newConversation() {
      var request = await identified({});
      try {
        return keep(await call('/api/directline/token', request), null);
      } catch (error) {
        // A handle expires (30 days by default) or is retired with the secret: start as a new user.
        if (!request.handle || error.code !== 'unauthorized') throw error;
        local.remove(HANDLE);
        return newConversation();
      }
    }

    async function refresh(stored) {
      var headers = { Authorization: 'Bearer ' + stored.token };
      return keep(await call('/api/directline/refresh', { headers: headers }), stored);
    }

    async function resume(stored) {
      var request = await identified({ conversationTicket: stored.ticket });
      return keep(await call('/api/directline/resume', request), stored);
    }

    // Speech credentials for Web Chat's microphone: kept in the tab (a reload within their life costs
    // no call) and asked again a minute before they expire; null when the service has no speech.
    async function speechCredentials() {
      var stored = readJson(session, SPEECH);
      if (stored && stored.until > now()) return stored.none ? null : stored;
      var request = await identified({});
      try {
        var body = await call('/api/speech/token', request, function (b) {
          return typeof b.authorizationToken === 'string' && typeof b.region === 'string';
        });
      } catch (error) {
        if (error.code !== 'speech_not_configured') throw error;
        session.set(SPEECH, JSON.stringify({ none: true, until: now() + SPEECH_ABSENT_MS }));
        return null;
      }
      var lifetime = (typeof body.expires_in === 'number' ? body.expires_in : 600) * 1000;
      var credentials = {
        authorizationToken: body.authorizationToken,
        region: body.region,
        until: now() + Math.max(0, lifetime - SPEECH_MARGIN_MS)
      };
      session.set(SPEECH, JSON.stringify(credentials));
      return credentials;
    }

    function sessionOf(conversation, how) {
      held = conversation.conversationId;
      return {
        token: conversation.token,
        domain: conversation.domain,
        conversationId: conversation.conversationId,
        watermark: conversation.watermark || undefined,
        how: how
      };
    }

    async function storedConversation() {
      var stored = readJson(session, CONVERSATION);
      if (!stored || !stored.token || !stored.conversationId) return null;
      if (await heldElsewhere(stored.conversationId)) {
        session.remove(CONVERSATION); // a duplicated tab: the conversation is the other tab's
        return null;
      }
      return stored;
    }

    return {
      /** The conversation of this tab: reused, refreshed, resumed, or a new one (see above). */
      start: async function () {
        var stored = await storedConversation();
        if (stored) {
          var left = stored.expiresAt - now();
          var margin = Math.min(EXPIRY_MARGIN_MS, (stored.lifetime || 0) / 10);
          if (left > margin && left > (stored.lifetime || 0) / 2) {
            return sessionOf(stored, 'reused');
          }
          if (left > margin) {
            try {
              return sessionOf(await refresh(stored), 'refreshed');
            } catch (error) {
              if (error.code !== 'token_expired') return sessionOf(stored, 'reused');
            }
          }
          if (stored.ticket) {
            try {
              return sessionOf(await resume(stored), 'resumed');
            } catch (error) {
              if (START_OVER.indexOf(error.code) < 0) throw error; // keep it for the next try
            }
          }
        }
        session.remove(CONVERSATION);
        return sessionOf(await newConversation(), 'new');
      },

      /** Store the watermark (and a token Web Chat renewed by itself) after an activity arrived. */
      remember: function (directLine, activity) {
        var stored = readJson(session, CONVERSATION);
        if (!stored || stored.conversationId !== directLine.conversationId) return;
        var fromId = watermarkFromId(activity && activity.id);
        stored.watermark = directLine.watermark || fromId || stored.watermark;
        if (directLine.token && directLine.token !== stored.token) {
          var claims = jwtClaims(directLine.token);
          stored.token = directLine.token;
          if (claims.exp) stored.expiresAt = claims.exp * 1000;
          if (claims.exp && claims.iat) stored.lifetime = (claims.exp - claims.iat) * 1000;
        }
        session.set(CONVERSATION, JSON.stringify(stored));
      },

      /** Forget the conversation (the next start() begins a new one); the user handle stays. */
      forgetConversation: function () {
        session.remove(CONVERSATION);
        held = null;
      },

      /** Forget everything, the remembered user included. */
      forgetAll: function () {
        session.remove(CONVERSATION);
        local.remove(HANDLE);
        held = null;
      },

      /**
       * Web Chat's speech credentials, {authorizationToken, region}, or null when the service has no
       * speech (the page then shows no microphone). Fresh for at least a minute.
       */
      speech: async function () {
        var credentials = await speechCredentials();
        return credentials && { authorizationToken: credentials.authorizationToken, region: credentials.region };
      },

      /** Stop listening to other tabs (a page that unmounts its chat). */
      close: function () {
        if (channel) channel.close();
        channel = null;
      }
    };
  }

  var api = {
    create: create,
    ServiceError: ServiceError,
    watermarkFromId: watermarkFromId,
    HANDLE_KEY: DEFAULT_PREFIX + ':userHandle' // where the user handle lives with the default prefix
  };
  if (typeof module === 'object' && module.exports) module.exports = api;
  global.DirectLineTokenClient = api;
})(typeof window !== 'undefined' ? window : globalThis);
