"""Schemathesis hooks for actiond's contract test.

A schema can say what a well-formed action is, not what exists on the server:
whether `webhook.from` is a registered sender, whether the template is APPROVED
in that language with these parameter counts, whether a phone number is
assigned in its country, whether an event endpoint's host is public. For the
data schemathesis generates as valid, these hooks put the dev sandbox's
sender, one of its templates, a real number and a public URL in those fields, so that valid data must be accepted and the operations chained
by the document's links act on actions that exist. Invalid data is left as
generated: the server must refuse it.
"""

import schemathesis

SENDER = "650175178190170"
OTHER_SENDER = "650175178190171"
MAX_WAIT = 1
ENDPOINT_URL = "https://hooks.example.com/actiond/events"
RECIPIENT = "+1 (281) 712-6508"
TEMPLATE = {
    "template_name": "call_permission_request",
    "language_code": "en",
    "body_params": ["Ana"],
    "header_params": [],
    "button_params": [],
}


def _blank(value):
    return value is None or (isinstance(value, str) and not value.strip())


def _pin_action(body, whole):
    webhook = body.get("webhook")
    if whole or isinstance(webhook, dict):
        webhook = webhook if isinstance(webhook, dict) else {}
        webhook.update(TEMPLATE, to=RECIPIENT)
        webhook["from"] = SENDER
        body["webhook"] = webhook
    if not _blank(body.get("phone_number")):
        body["phone_number"] = RECIPIENT


@schemathesis.hook
def map_case(context, case):
    operation = case.operation.definition.raw.get("operationId")
    if operation == "delete_sender" and (case.path_parameters or {}).get("phone_number_id") == SENDER:
        # Every other operation relies on the sandbox sender: deleting is
        # tested on other ids, never on the run's own fixture.
        case.path_parameters["phone_number_id"] = OTHER_SENDER
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return case
    if isinstance(case.query, dict) and isinstance(case.query.get("wait"), int):
        # ?wait may hold a request 60 s; the run's budget allows 1.
        case.query["wait"] = min(case.query["wait"], MAX_WAIT)
    if not isinstance(case.body, dict):
        return case
    if operation in ("create_action", "replace_action", "preview_action_body"):
        _pin_action(case.body, whole=True)
    elif operation == "patch_action":
        _pin_action(case.body, whole=False)
    if operation in ("execute_action", "preview_action", "preview_action_body") and not _blank(case.body.get("to")):
        case.body["to"] = RECIPIENT
    if operation in ("create_webhook_endpoint", "patch_webhook_endpoint") and isinstance(case.body.get("url"), str):
        # Where a URL points is the server's to check: valid data names a public host.
        case.body["url"] = ENDPOINT_URL
    return case



# Ids that a create answered as an idempotent replay (Idempotent-Replayed:
# true): the replay repeats the first answer, as Stripe's does, even when the
# action was deleted since. A 404 on such an id is what the key promises, not
# a created resource gone missing.
REPLAYED_IDS = set()


@schemathesis.hook
def after_call(context, case, response):
    if response.headers.get("idempotent-replayed") in ("true", ["true"]):
        try:
            REPLAYED_IDS.add(response.json()["data"]["action_id"])
        except (ValueError, KeyError, TypeError):
            pass


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if type(failure).__name__ != "EnsureResourceAvailability":
        return True
    return (case.path_parameters or {}).get("action_id") not in REPLAYED_IDS
