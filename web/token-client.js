/*
 * token-client.js: gets Direct Line tokens for Web Chat from the token service.
 * No dependencies; copy it into your site. It defines window.DirectLineTokenClient.
 *
 *   const client = DirectLineTokenClient.create({ serviceUrl: '' });   // '' = same origin
 *   const s = await client.start();   // {token, domain, conversationId, watermark, resumed}
 *   const directLine = WebChat.createDirectLine({
 *     token: s.token, domain: s.domain, conversationId: s.conversationId, webSocket: false
 *   });
 *   // on every incoming activity: client.remember(directLine, activity)   (see index.html)
 *
 * Options of create(): serviceUrl, userName (sent in anonymous mode), getIdentityToken (async,
 * returns the site's sign-in token for AUTH_MODE=jwt), storagePrefix, and for tests fetch, now,
 * localStorage, sessionStorage.
 *
 * What it stores, and where:
 *   localStorage   `<prefix>:userHandle`    the signed handle the service returns in anonymous mode;
 *                                           sending it back gets the same user id ("remember me"
 *                                           without a login), across tabs and browser restarts.
 *   sessionStorage `<prefix>:conversation`  {token, conversationId, expiresAt, domain, watermark}.
 *                                           Session storage survives a reload but not closing the
 *                                           tab, so a token never outlives the tab on disk, and two
 *                                           tabs hold two conversations instead of fighting over one
 *                                           watermark.
 *
 * start() resumes the stored conversation while its token is still valid (after refreshing the token
 * through the service); once it has expired, or the service says token_expired, it starts a new
 * conversation as the same remembered user. Errors reject with a DirectLineTokenClient.ServiceError
 * carrying the service's {status, code, message, retryAfter}; no message ever contains a token.
 */
(function (global) {
  'use strict';

  var EXPIRY_MARGIN_MS = 30 * 1000; // a token this close to expiry may die before the refresh lands

  class ServiceError extends Error {
    constructor(status, code, message, retryAfter) {
      super(message);
      this.name = 'DirectLineTokenServiceError';
      this.status = status; // 0 when the service could not be reached
      this.code = code;
      this.retryAfter = retryAfter; // seconds, when the service said
    }
  }

  // Storage can be missing or throw (privacy modes, disabled cookies): then keep things in memory.
  function safeStorage(storage) {
    var memory = {};
    return {
      get: function (key) {
        try {
          return storage ? storage.getItem(key) : memory[key] || null;
        } catch (_) {
          return memory[key] || null;
        }
      },
      set: function (key, value) {
        try {
          if (storage) return storage.setItem(key, value);
        } catch (_) {
          /* fall through to memory */
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

  // Direct Line tokens are JWTs; their `exp` tells when a token renewed by Web Chat itself expires.
  function jwtExpiryMs(token) {
    try {
      var part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      var exp = JSON.parse(atob(part + '==='.slice((part.length + 3) % 4))).exp;
      return typeof exp === 'number' ? exp * 1000 : null;
    } catch (_) {
      return null;
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
    var prefix = options.storagePrefix || 'directline-token';
    var now = options.now || Date.now;
    var fetchFn = options.fetch || global.fetch.bind(global);
    var local = safeStorage(options.localStorage || global.localStorage);
    var session = safeStorage(options.sessionStorage || global.sessionStorage);
    var HANDLE = prefix + ':userHandle';
    var CONVERSATION = prefix + ':conversation';

    async function call(path, init) {
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
      if (response.ok && body && body.token && body.conversationId) return body;
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

    // Direct Line always sends expires_in; should it ever not, the token's own `exp` still says.
    function expiresAt(body) {
      if (typeof body.expires_in === 'number') return now() + body.expires_in * 1000;
      return jwtExpiryMs(body.token) || now();
    }

    function save(conversation) {
      session.set(CONVERSATION, JSON.stringify(conversation));
      return conversation;
    }

    async function newConversation() {
      var handle = local.get(HANDLE);
      var request = {};
      if (handle) request.userHandle = handle;
      if (options.userName) request.userName = options.userName;
      var headers = { 'Content-Type': 'application/json' };
      // AUTH_MODE=jwt: the site's own sign-in token proves who the user is.
      var identity = options.getIdentityToken ? await options.getIdentityToken() : null;
      if (identity) headers.Authorization = 'Bearer ' + identity;
      var body;
      try {
        body = await call('/api/directline/token', { headers: headers, body: JSON.stringify(request) });
      } catch (error) {
        // A handle expires (30 days by default) or is retired with the secret: start as a new user.
        if (!handle || error.code !== 'unauthorized') throw error;
        local.remove(HANDLE);
        return newConversation();
      }
      if (body.userHandle) local.set(HANDLE, body.userHandle);
      return save({
        token: body.token,
        conversationId: body.conversationId,
        expiresAt: expiresAt(body),
        domain: body.domain,
        watermark: ''
      });
    }

    async function resume(stored) {
      var headers = { Authorization: 'Bearer ' + stored.token };
      var body = await call('/api/directline/refresh', { headers: headers });
      return save(
        Object.assign({}, stored, {
          token: body.token,
          conversationId: body.conversationId,
          expiresAt: expiresAt(body),
          domain: body.domain || stored.domain
        })
      );
    }

    function sessionOf(conversation, resumed) {
      return {
        token: conversation.token,
        domain: conversation.domain,
        conversationId: conversation.conversationId,
        watermark: conversation.watermark || undefined,
        resumed: resumed
      };
    }

    return {
      /** Resume the stored conversation if its token is still good, else start a new one. */
      start: async function () {
        var stored = readJson(session, CONVERSATION);
        var usable = stored && stored.token && stored.conversationId;
        if (usable && stored.expiresAt - now() > EXPIRY_MARGIN_MS) {
          try {
            return sessionOf(await resume(stored), true);
          } catch (error) {
            if (error.status !== 401) throw error; // token_expired: start over below
          }
        }
        session.remove(CONVERSATION);
        return sessionOf(await newConversation(), false);
      },

      /** Store the watermark (and a token Web Chat renewed by itself) after an activity arrived. */
      remember: function (directLine, activity) {
        var stored = readJson(session, CONVERSATION);
        if (!stored || stored.conversationId !== directLine.conversationId) return;
        var fromId = watermarkFromId(activity && activity.id);
        stored.watermark = directLine.watermark || fromId || stored.watermark;
        if (directLine.token && directLine.token !== stored.token) {
          stored.token = directLine.token;
          stored.expiresAt = jwtExpiryMs(directLine.token) || stored.expiresAt;
        }
        save(stored);
      },

      /** Forget the conversation (the next start() begins a new one); the user handle stays. */
      forgetConversation: function () {
        session.remove(CONVERSATION);
      },

      /** Forget everything, the remembered user included. */
      forgetAll: function () {
        session.remove(CONVERSATION);
        local.remove(HANDLE);
      }
    };
  }

  var api = { create: create, ServiceError: ServiceError, watermarkFromId: watermarkFromId };
  if (typeof module === 'object' && module.exports) module.exports = api;
  global.DirectLineTokenClient = api;
})(typeof window !== 'undefined' ? window : globalThis);
