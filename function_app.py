"""The Azure Functions entry point (Python v2 programming model): one function per route of the
core's route table (tokens/routes.py) and the keep-warm timer. This module only converts between
Azure's request and response types and the core's; it is the only one that imports azure.functions.

Every function is ANONYMOUS on purpose: a public web page cannot keep a function key secret, so a
key would protect nothing. The allow-list of origins, the caller's identity and the rate limits
protect the endpoint instead (see docs/security.md).
"""

import azure.functions as func

from tokens import routes
from tokens.http import Request

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def answer(route: str, req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    # The Functions host does not tell the worker the connection's address: Azure's front end
    # writes it into X-Forwarded-For, which is why TRUSTED_PROXY_HOPS is 1 by default.
    request = Request.build(
        req.method, dict(req.headers), req.get_body(), peer=None, invocation_id=context.invocation_id
    )
    response = routes.answer(route, request)
    return func.HttpResponse(
        body=response.body, status_code=response.status, headers=response.all_headers()
    )


@app.route(route="directline/token", methods=["POST", "OPTIONS"])
def directline_token(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return answer("directline/token", req, context)


@app.route(route="directline/refresh", methods=["POST", "OPTIONS"])
def directline_refresh(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return answer("directline/refresh", req, context)


@app.route(route="directline/resume", methods=["POST", "OPTIONS"])
def directline_resume(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return answer("directline/resume", req, context)


@app.route(route="speech/token", methods=["POST", "OPTIONS"])
def speech_token(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return answer("speech/token", req, context)


@app.route(route="health", methods=["GET"])
def health(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return answer("health", req, context)


# The schedule monitor (the default) is what lets the host report a past-due tick.
# The host reads the schedule when it indexes the functions: the process's settings are read here,
# once, and never make this import fail (an invalid schedule is a problem health reports, and the
# timer keeps the default meanwhile).
@app.timer_trigger(schedule=routes.timer_schedule(), arg_name="timer", run_on_startup=False)
def warmup_timer(timer: func.TimerRequest) -> None:
    routes.service().warm_up(past_due=timer.past_due)
