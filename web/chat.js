/*
 * chat.js: Web Chat for a DirectLineTokenClient, kept going. No dependencies beyond Web Chat's
 * bundle (window.WebChat) and token-client.js. It defines window.DirectLineChat.
 *
 *   const chat = DirectLineChat.mount({
 *     element: document.getElementById('webchat'),
 *     client: DirectLineTokenClient.create({ serviceUrl: '' }),
 *     replayHistory: true,             // after a reload, show the whole conversation again
 *     webSocket: true,                 // Web Chat's default transport; false polls every second
 *     speech: true,                    // a microphone when the service has speech (/api/speech/token)
 *     onStatus: function (text) {},    // "Connecting…", "Connected.", …
 *     onError: function (code, message) {}
 *   });
 *
 * It remembers the watermark after every activity, and when the token expires while the page is
 * open (a laptop that slept) it resumes the same conversation in place, through the service.
 *
 *   DirectLineChat.loadWebChat({ src: '…/webchat.js', integrity: 'sha384-…' })   // a Promise
 *
 * adds Web Chat's script to the page once, when it is first needed (the widget does so on the first
 * click), and rejects when it cannot be loaded.
 */
(function (global) {
  'use strict';

  var RECONNECT_PAUSE_MS = 10 * 1000; // at most one reconnect per pause, should expiry repeat

  // directlinejs ConnectionStatus: 2 Online, 3 ExpiredToken, 4 FailedToConnect, 5 Ended.
  var ONLINE = 2;
  var EXPIRED = 3;
  var FAILED = 4;
  var ENDED = 5;

  function describe(error) {
    var message = error.message || 'Something went wrong.';
    if (error.retryAfter) message += ' Try again in ' + error.retryAfter + ' seconds.';
    return message;
  }

  function mount(options) {
    var client = options.client;
    var onStatus = options.onStatus || function () {};
    var onError = options.onError || function () {};
    var directLine = null;
    var lastReconnect = 0;

    // Web Chat's speech, when the service has it: the microphone button appears, and Web Chat asks
    // the credentials function whenever it needs them (the client keeps them fresh).
    async function speechFactory() {
      if (options.speech === false || !global.WebChat.createCognitiveServicesSpeechServicesPonyfillFactory) {
        return undefined;
      }
      try {
        if (!(await client.speech())) return undefined; // speech_not_configured: no microphone
      } catch (_) {
        return undefined; // speech is a bonus: the chat goes on without it
      }
      return global.WebChat.createCognitiveServicesSpeechServicesPonyfillFactory({
        credentials: function () {
          return client.speech();
        }
      });
    }

    function render(session, webSpeechPonyfillFactory) {
      var previous = directLine;
      var line = global.WebChat.createDirectLine({
        token: session.token,
        domain: session.domain,
        // Web Chat's default: Direct Line's WebSocket stream, pushed as soon as the bot answers.
        // false polls every second instead (for networks that block WebSockets): slower, and one
        // Direct Line call a second for each open tab.
        webSocket: options.webSocket !== false,
        conversationId: session.conversationId,
        watermark: session.how !== 'new' && !options.replayHistory ? session.watermark : undefined
      });
      directLine = line;
      if (previous) previous.end(); // after the switch: its "ended" must not forget the conversation
      // Web Chat's store sees every incoming activity after directlinejs has updated its
      // watermark; a second subscription to activity$ could start polling before Web Chat
      // subscribes, and activity$ is shared, so Web Chat would miss the first activities.
      var store = global.WebChat.createStore({}, function () {
        return function (next) {
          return function (action) {
            if (action.type === 'DIRECT_LINE/INCOMING_ACTIVITY') {
              client.remember(line, action.payload && action.payload.activity);
            }
            return next(action);
          };
        };
      });
      line.connectionStatus$.subscribe(function (status) {
        if (line !== directLine) return; // an earlier connection, replaced
        if (status === ONLINE) {
          onStatus(session.how === 'new' ? 'Connected.' : 'Connected (conversation resumed).');
        } else if (status === EXPIRED) {
          reconnect();
        } else if (status === FAILED || status === ENDED) {
          // The stored conversation cannot be used again: the next load starts a new one.
          client.forgetConversation();
          onError(
            'connection_failed',
            session.how === 'new'
              ? 'Could not connect to the bot. Reload the page to try again.'
              : 'The previous conversation could not be resumed. Reload to start a new one.'
          );
        }
      });
      onStatus('Connecting…');
      global.WebChat.renderWebChat(
        Object.assign(
          {
            directLine: line,
            store: store,
            webSpeechPonyfillFactory: webSpeechPonyfillFactory,
            // The emulator and this sample have no file uploads; remove the option if your bot does.
            styleOptions: { hideUploadButton: true }
          },
          options.webChat
        ),
        options.element
      );
    }

    async function connect() {
      if (!global.WebChat) {
        onError('webchat_unavailable', 'Web Chat could not be loaded. Check the network, then reload.');
        return;
      }
      onStatus('Getting a chat token…');
      try {
        var started = await Promise.all([client.start(), speechFactory()]);
        render(started[0], started[1]);
      } catch (error) {
        onError(error.code || 'error', describe(error));
      }
    }

    // The token expired while the page was open: resume the same conversation in place.
    function reconnect() {
      if (Date.now() - lastReconnect < RECONNECT_PAUSE_MS) {
        onError('token_expired', 'The chat session expired. Reload the page to continue.');
        return;
      }
      lastReconnect = Date.now();
      onStatus('Reconnecting…');
      connect();
    }

    connect();
    return {
      /** Forget the conversation and start a new one in place; the user stays the same. */
      restart: function () {
        client.forgetConversation();
        connect();
      }
    };
  }

  var loading = null; // the one load of Web Chat's script, shared by every caller

  function loadWebChat(source) {
    if (global.WebChat) return Promise.resolve(global.WebChat);
    if (loading) return loading;
    loading = new Promise(function (resolve, reject) {
      var script = global.document.createElement('script');
      script.src = source.src;
      if (source.integrity) {
        script.integrity = source.integrity;
        script.crossOrigin = 'anonymous'; // Subresource Integrity needs a CORS request
      }
      script.onload = function () {
        if (global.WebChat) resolve(global.WebChat);
        else reject(new Error('Web Chat loaded, but defined nothing.'));
      };
      script.onerror = function () {
        loading = null; // a later try may work (the network came back)
        script.remove();
        reject(new Error('Web Chat could not be loaded.'));
      };
      global.document.head.appendChild(script);
    });
    return loading;
  }

  global.DirectLineChat = { mount: mount, loadWebChat: loadWebChat };
})(typeof window !== 'undefined' ? window : globalThis);
