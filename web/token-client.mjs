/*
 * token-client.mjs: token-client.js as an ES module, for sites that import their scripts.
 *
 *   import { create } from './token-client.mjs';
 *
 * It runs token-client.js itself (one implementation; in a module it still defines
 * globalThis.DirectLineTokenClient) and re-exports what that defines.
 */
import './token-client.js';

const api = globalThis.DirectLineTokenClient;

export const create = api.create;
export const ServiceError = api.ServiceError;
export const watermarkFromId = api.watermarkFromId;
export const HANDLE_KEY = api.HANDLE_KEY;
export default api;
