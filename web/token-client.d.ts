/**
 * Types of token-client.js: as a classic script (the global `DirectLineTokenClient`) and as
 * CommonJS. The ES module (token-client.mjs) has the same in token-client.d.mts.
 */
export as namespace DirectLineTokenClient;

export interface TokenClientOptions {
  /** Base URL of the token service; '' (the default) is the page's own origin. */
  serviceUrl?: string;
  /** Sent as `userName` in anonymous mode. */
  userName?: string;
  /** The site's sign-in token for AUTH_MODE=jwt, sent as `Authorization: Bearer`. */
  getIdentityToken?: () => string | null | undefined | Promise<string | null | undefined>;
  /** Prefix of the storage keys; default `directline-token`. */
  storagePrefix?: string;
  /** For tests and other hosts. */
  fetch?: typeof fetch;
  now?: () => number;
  localStorage?: Storage | null;
  sessionStorage?: Storage | null;
  /** null turns the duplicate-tab check off. */
  BroadcastChannel?: typeof BroadcastChannel | null;
}

/** What start() decided a page load costs. */
export type How = 'reused' | 'refreshed' | 'resumed' | 'new';

export interface ChatSession {
  token: string;
  /** The Direct Line base URL for `createDirectLine({ token, domain })`. */
  domain: string;
  conversationId: string;
  watermark?: string;
  how: How;
}

/**
 * Web Chat's DirectLine object, of which remember() reads `conversationId`, `watermark` and `token`
 * (private in DirectLineJS's own types, hence `object`).
 */
export type DirectLineLike = object;

/** What Web Chat's speech ponyfill takes (createCognitiveServicesSpeechServicesPonyfillFactory). */
export interface SpeechCredentials {
  authorizationToken: string;
  region: string;
}

export interface TokenClient {
  /** The conversation of this tab: reused, refreshed, resumed, or a new one. */
  start(): Promise<ChatSession>;
  /** Store the watermark (and a token Web Chat renewed) after an activity arrived. */
  remember(directLine: DirectLineLike, activity?: { id?: string } | null): void;
  /** Forget the conversation; the user stays. */
  forgetConversation(): void;
  /** Forget the conversation and the user. */
  forgetAll(): void;
  /** Speech credentials, fresh for at least a minute; null when the service has no speech. */
  speech(): Promise<SpeechCredentials | null>;
  /** Stop listening to other tabs (a page that unmounts the chat). */
  close(): void;
}

/** The service's error, or `network_error` (status 0) when it could not be reached. */
export declare class ServiceError extends Error {
  constructor(status: number, code: string, message: string, retryAfter?: number);
  readonly status: number;
  readonly code: string;
  /** Seconds, when the service said (Retry-After). */
  readonly retryAfter?: number;
}

export declare function create(options?: TokenClientOptions): TokenClient;
export declare function watermarkFromId(id: string | null | undefined): string | null;
/** The localStorage key of the user handle with the default prefix: `directline-token:userHandle`. */
export declare const HANDLE_KEY: string;
