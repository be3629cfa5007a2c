// Type-checked by `npx tsc -p web` (tests/test_web_client.py): the declarations of token-client
// are usable from a module, with the names and shapes the library has.
import DirectLineTokenClient, { create, HANDLE_KEY, ServiceError, type ChatSession, type TokenClient } from '../token-client.mjs';

const client: TokenClient = create({ serviceUrl: 'https://service.example', storagePrefix: 'chat' });
const key: string = HANDLE_KEY;

async function start(): Promise<ChatSession> {
  try {
    return await client.start();
  } catch (error) {
    if (error instanceof ServiceError && error.code === 'rate_limited') {
      const seconds: number | undefined = error.retryAfter;
      throw new Error(`retry in ${seconds ?? 60} s (${key})`);
    }
    throw error;
  }
}

void start().then((session) => {
  const how: 'reused' | 'refreshed' | 'resumed' | 'new' = session.how;
  client.remember({ conversationId: session.conversationId, watermark: '3' }, { id: 'c|0000003' });
  return how;
});
void DirectLineTokenClient.watermarkFromId('c|0000042');
