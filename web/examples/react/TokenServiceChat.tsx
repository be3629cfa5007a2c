// A React component that embeds Web Chat with tokens from the token service: the pattern of
// docs/web-page.md, "Web Chat in a React app". It uses the npm package botframework-webchat (with
// React 18: Web Chat 4.18 does not run on React 19) and token-client.mjs from this folder's parent.
import { useEffect, useMemo, useState } from 'react';
import ReactWebChat, { createDirectLine, createStore } from 'botframework-webchat';

import { create, type ChatSession, type TokenClient } from '../../token-client.mjs';

/** The part of Web Chat's store actions read here. */
type Action = { type: string; payload?: { activity?: { id?: string } } };

export interface TokenServiceChatProps {
  /** The token service, e.g. 'https://my-func.azurewebsites.net'; its ALLOWED_ORIGINS lists this site. */
  serviceUrl: string;
}

export function TokenServiceChat({ serviceUrl }: TokenServiceChatProps) {
  const client: TokenClient = useMemo(() => create({ serviceUrl }), [serviceUrl]);
  const [session, setSession] = useState<ChatSession | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    let current = true;
    client.start().then(
      (started) => current && setSession(started),
      (failed: { code?: string; message?: string }) => current && setError(`${failed.code}: ${failed.message}`)
    );
    return () => {
      current = false;
      client.close();
    };
  }, [client]);

  // One DirectLine per conversation: created again only when the session changes. Web Chat's
  // default transport (the WebSocket stream) is used; `webSocket: false` would poll instead.
  const directLine = useMemo(
    () =>
      session &&
      createDirectLine({
        token: session.token,
        domain: session.domain,
        conversationId: session.conversationId,
        watermark: session.watermark
      }),
    [session]
  );
  // Remember the watermark after every activity, so that a reload can resume where it was.
  const store = useMemo(
    () =>
      createStore({}, () => (next: (action: Action) => unknown) => (action: Action) => {
        if (directLine && action.type === 'DIRECT_LINE/INCOMING_ACTIVITY') {
          client.remember(directLine, action.payload?.activity);
        }
        return next(action);
      }),
    [client, directLine]
  );

  if (error) return <p role="alert">{error}</p>;
  if (!directLine) return <p role="status">Connecting…</p>;
  return <ReactWebChat directLine={directLine} store={store} />;
}
