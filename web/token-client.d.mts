/** Types of token-client.mjs, the ES module: the same as token-client.d.ts. */
import * as api from './token-client.js';

export * from './token-client.js';
export default api;
