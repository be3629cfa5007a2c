"""The Azure Functions host's side of the language-worker protocol (host.py), and a stand-in for the
platform's Python proxy worker that runs Microsoft's library worker under Python 3.13
(proxy_worker.py, with the protocol subset in FunctionRpc.proto)."""
