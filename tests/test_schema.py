"""The JSON Schemas in schemas/ and the diagnostics flowrunner.source.schema builds from them."""

from __future__ import annotations

import copy
import json
import pathlib
import textwrap

import pytest
import yaml
from jsonschema import Draft202012Validator

from flowrunner.errors import LoadError, Mark
from flowrunner.source import fastcheck, schema, schema_errors
from flowrunner.source.loader import load_path

ROOT = pathlib.Path(__file__).resolve().parent.parent

PROJECT = {
    "version": 1,
    "http": {
        "enabled": True,
        "allow_http": False,
        "allowlist": ["crm.example.com", "203.0.113.0/24"],
    },
    "webhooks": {
        "crm": {
            "url": "https://crm.example.com/flows",
            "method": "POST",
            "auth": "none",
            "body": "none",
            "headers": {"X-Team": "ivr"},
            "timeout": 10,
            "default": True,
            "signing_secret": {"secret": "HOOK_KEY"},
            "methods": {
                "getOrderStatus": {
                    "description": "Latest order of a caller.",
                    "response": {"order_status": "status", "order_id": "order.id"},
                }
            },
        },
        "calendar": {
            "url": "https://calendar.example.com/hooks",
            "method": "GET",
            "auth": {"basic": {"username": "u", "password": {"secret": "CAL_PASSWORD"}}},
            "body": "json",
            "headers": {"X-Key": {"secret": "CAL_KEY"}, "X-Did": "$call.did"},
            "timeout": 2.5,
            "methods": {"ping": None, "next-slot": {"response": {"slot": "items.0.start"}}},
        },
        "shop_v2": {
            "url": "https://shop.example.com/api",
            "auth": {"bearer": {"token": {"secret": "SHOP_TOKEN"}}},
            "body": "form",
        },
    },
    "user_keys": {"tier": "gold", "calls": 0, "last": None},
    "state": ".flowrunner/state.db",
    "delivery": {"retry_schedule": [5, 300, 1800, 7200, 18000, 36000, 36000], "lease": 30},
}

FLOW = {
    "flow": "order-status",
    "description": "Tell callers where their latest order is.",
    "on_complete": True,
    "keys": {"attempts": 0, "order_status": None},
    "steps": [
        {
            "id": "count-call",
            "operation": "assign",
            "set": {
                "attempts": "{{ $flow.key.attempts + 1 }}",
                "caller": "$call.cli",
                "$user.key.last_caller": "$call.cli",
            },
        },
        {
            "id": "lookup",
            "webhook": "crm",
            "method": "getOrderStatus",
            "parameters": ["call", "flow.key"],
            "params": {"order_hint": "{{ $flow.key.caller[-4:] }}"},
            "document": "Looks up the caller's latest order.",
            "on_failure": "sorry",
        },
        {
            "id": "shipped",
            "when": "{{ $flow.key.order_status == 'shipped' }}",
            "operation": "assign",
            "set": {"message": "Order {{ $flow.key.order_id }} has shipped."},
            "next": "end",
        },
        {
            "id": "not-yet",
            "description": "Anything but shipped.",
            "when": True,
            "operation": "assign",
            "set": {"message": "Order {{ $flow.key.order_id }} is $flow.key.order_status."},
            "next": "end",
        },
        {"id": "sorry", "operation": "assign", "set": {"message": "Sorry."}},
    ],
}

PAYLOAD = {
    "phonon-uuid": "9b2f0c4e-1d7a-4c1e-8f51-0a1b2c3d4e5f",
    "request-id": None,
    "cli": "+15551234567",
    "flow": "order-status",
    "flowStatus": "COMPLETED",
    "error": None,
    "callDetails": [
        {
            "cdrId": "cdr-1",
            "startTime": "2026-11-28T10:00:00Z",
            "connectTime": "2026-11-28T10:00:01Z",
            "endTime": "2026-11-28T10:01:00Z",
            "calleeNumber": "+15557654321",
            "didNumber": "+15550000000",
            "duration": "60",
            "hangupCause": "NORMAL_CLEARING",
            "incoming": True,
        }
    ],
    "keys": [
        {"name": "$flow.key.attempts", "value": "1"},
        {"name": "$flow.key.order_status", "value": None},
    ],
    "recordingUrls": [],
    "startedAt": "2026-11-28T10:00:00.000+00:00",
    "endedAt": "2026-11-28T10:00:00.120+00:00",
}

FAILED_PAYLOAD = {
    **PAYLOAD,
    "flowStatus": "FAILED",
    "error": {"step": "lookup", "reason": "TIMEOUT", "message": "no answer within 10 s"},
    "callDetails": [{"incoming": False}],
    "recordingUrls": ["https://rec.example.com/1.wav"],
    "endedAt": "2026-11-28T10:00:10.120Z",
}


def _marks(text: str):
    """``mark`` and ``key_mark`` functions over ``text``, as the loader provides them."""
    marks: dict[tuple, Mark] = {}
    key_marks: dict[tuple, Mark] = {}

    def at(node) -> Mark:
        return Mark(node.start_mark.line + 1, node.start_mark.column + 1)

    def walk(node, path: tuple) -> None:
        marks[path] = at(node)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                key_marks[path + (key.value,)] = at(key)
                walk(value, path + (key.value,))
        elif isinstance(node, yaml.SequenceNode):
            for index, value in enumerate(node.value):
                walk(value, path + (index,))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return (lambda path: marks.get(path, Mark(1, 1))), (lambda path: key_marks[path])


def check(text: str, kind: schema.Kind = "flow") -> list[str]:
    text = textwrap.dedent(text)
    mark, key_mark = _marks(text)
    found = schema.check(yaml.safe_load(text), kind, "f.yaml", mark, key_mark)
    return [d.format() for d in found]


def walk_schemas(node, where="#"):
    """Every (location, subschema) below ``node``."""
    if not isinstance(node, dict):
        return
    yield where, node
    for key in ("properties", "$defs", "patternProperties"):
        for name, sub in node.get(key, {}).items():
            yield from walk_schemas(sub, f"{where}/{key}/{name}")
    for key in ("items", "additionalProperties", "propertyNames", "if", "then", "else", "not"):
        yield from walk_schemas(node.get(key), f"{where}/{key}")
    for key in ("allOf", "anyOf", "oneOf"):
        for index, sub in enumerate(node.get(key, [])):
            yield from walk_schemas(sub, f"{where}/{key}/{index}")


# -- the schema files -------------------------------------------------------------


@pytest.mark.parametrize("kind", schema.KINDS)
def test_schema_is_valid_2020_12_with_id_title_description(kind):
    document = schema.schema(kind)
    Draft202012Validator.check_schema(document)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["$id"] == f"https://flowrunner.dev/schemas/{kind}.schema.json"
    assert document["title"] and document["description"]


@pytest.mark.parametrize("kind", schema.KINDS)
def test_every_property_has_a_description(kind):
    document = schema.schema(kind)
    missing = [
        f"{where}/properties/{name}"
        for where, node in walk_schemas(document)
        for name, sub in node.get("properties", {}).items()
        if not (isinstance(sub, dict) and sub.get("description"))
    ]
    missing += [
        f"{where}/additionalProperties"
        for where, node in walk_schemas(document)
        if isinstance(node.get("additionalProperties"), dict)
        and not node["additionalProperties"].get("description")
    ]
    missing += [f"#/$defs/{n}" for n, d in document["$defs"].items() if not d.get("description")]
    assert missing == []


def _closed(node, branch):
    """Whether ``branch`` of an if/then/else node refers to closed kind schemas only."""
    sub = node[branch]
    if "$ref" in sub:
        return True  # the referenced definition is checked on its own
    return "if" in sub and _closed(sub, "then") and "else" in sub


@pytest.mark.parametrize("kind", schema.KINDS)
def test_every_object_with_properties_is_closed(kind):
    open_objects = [
        where
        for where, node in walk_schemas(schema.schema(kind))
        if "properties" in node
        and node.get("additionalProperties") is not False
        and node.get("unevaluatedProperties") is not False
        # a step lists every key for editors, and each kind (then/else) is closed
        and not ("if" in node and all(_closed(node, k) for k in ("then", "else")))
    ]
    assert open_objects == []


@pytest.mark.parametrize("kind", schema.KINDS)
def test_references_point_into_defs(kind):
    document = schema.schema(kind)
    text = schema.schema_text(kind)
    refs = {n["$ref"] for _, n in walk_schemas(document) if "$ref" in n}
    assert refs and all(r.removeprefix("#/$defs/") in document["$defs"] for r in refs)
    assert json.loads(text) == document


def test_schema_files_are_found_and_parsed_once():
    assert schema.schema_path("flow") == ROOT / "schemas" / "flow.schema.json"
    assert schema.schema("project") is schema.schema("project")
    with pytest.raises(ValueError):
        schema.schema_path("nope")  # type: ignore[arg-type]


# -- valid documents ----------------------------------------------------------------


def test_spec_examples_are_valid():
    ignore = (lambda path: Mark(1, 1)), (lambda path: Mark(1, 1))
    assert schema.check(PROJECT, "project", "p", *ignore) == []
    assert schema.check(FLOW, "flow", "f", *ignore) == []
    assert schema.payload_errors(PAYLOAD) == []
    assert schema.payload_errors(FAILED_PAYLOAD) == []


def test_minimal_documents_are_valid():
    assert check("version: 1\n", "project") == []
    assert check("flow: x\nsteps: [{id: a, webhook: crm, method: m}]\n") == []


@pytest.mark.parametrize(
    "path", sorted((ROOT / "flows").glob("*.yaml")) + [ROOT / "flowrunner.yaml"], ids=str
)
def test_repository_examples_are_valid(path):
    if not path.exists():
        pytest.skip("no example project")
    kind = "project" if path.name == "flowrunner.yaml" else "flow"
    if path.name.endswith(".test.yaml"):
        kind = "test"
    assert check(path.read_text(encoding="utf-8"), kind) == []


def test_inlined_validator_agrees_with_the_schema_as_written():
    documents = [("project", PROJECT), ("flow", FLOW), ("on-complete", PAYLOAD)]
    broken = copy.deepcopy(PROJECT)
    broken["webhooks"]["crm"]["headers"] = {"X-A": 1, "X-B": {"secret": "b c"}}
    documents += [("project", broken), ("flow", {**FLOW, "keys": {"a b": 1}})]
    for kind, data in documents:
        plain = Draft202012Validator(schema.schema(kind))
        assert plain.is_valid(data) is schema_errors.validator(kind, schema.inlined(kind)).is_valid(
            data
        )


# -- messages -------------------------------------------------------------------------

FLOW_CASES = {
    "unknown key in webhook step, with a suggestion": (
        """
        flow: x
        steps:
          - id: lookup
            webhook: crm
            method: getOrderStatus
            methdo: getOrderStatus
        """,
        [
            "f.yaml:7:5: error: unknown key 'methdo' in webhook step (expected one of: "
            "description, document, id, method, next, on_failure, parameters, params, "
            "retry, webhook, when); did you mean 'method'? [schema]"
        ],
    ),
    "unknown key without a close match": (
        """
        flow: x
        colour: blue
        steps: [{id: a, operation: assign, set: {a: 1}}]
        """,
        [
            "f.yaml:3:1: error: unknown key 'colour' in the flow (expected one of: "
            "description, flow, keys, on_complete, steps) [schema]"
        ],
    ),
    "missing steps": (
        "flow: x\n",
        ["f.yaml:1:1: error: missing required key 'steps' [schema]"],
    ),
    "flow name": (
        "flow: Order Status\nsteps: [{id: a, operation: assign, set: {a: 1}}]\n",
        [
            "f.yaml:1:7: error: 'flow' must be a flow name: lowercase letters, digits, "
            "'_' and '-', starting with a letter or digit (such as order-status) [schema]"
        ],
    ),
    "not a mapping": (
        "- flow: x\n",
        ["f.yaml:1:1: error: expected a mapping, got a list [schema]"],
    ),
    "step with neither kind": (
        """
        flow: x
        steps:
          - id: a
            set: {a: 1}
        """,
        ["f.yaml:4:5: error: a step needs either 'operation' or 'webhook' [schema]"],
    ),
    "step that is not a mapping": (
        "flow: x\nsteps: [lookup]\n",
        ["f.yaml:2:9: error: item 1 of 'steps' must be a mapping, got a string [schema]"],
    ),
    "step id end and bad targets": (
        """
        flow: x
        steps:
          - id: end
            operation: assign
            set: {a: 1}
            next: 3
        """,
        [
            "f.yaml:4:9: error: 'id' must be a step id: letters, digits, '_' and '-', starting "
            "with a letter or digit, and not 'end' [schema]",
            "f.yaml:7:11: error: 'next' must be a string, got a number [schema]",
        ],
    ),
    "operation step values": (
        """
        flow: x
        on_complete: 3
        keys: {ok: 1, bad key: 2}
        steps:
          - id: a
            operation: call
            when: 4
            set: {}
          - id: b
            operation: assign
            set: {$sys.now: 1, $call.cli: 2}
        """,
        [
            "f.yaml:3:14: error: 'on_complete' must be a boolean or a string, got a number "
            "[schema]",
            "f.yaml:4:15: error: key 'bad key' in 'keys' must be a variable name: letters, digits "
            "and '_', not starting with a digit (such as order_id) "
            "[schema]",
            "f.yaml:7:16: error: 'operation' must be 'assign' [schema]",
            "f.yaml:8:11: error: 'when' must be a string or a boolean, got a number [schema]",
            "f.yaml:9:10: error: 'set' must not be empty [schema]",
            "f.yaml:12:11: error: key '$sys.now' in 'set' must be a flow key name or "
            "$user.key.<name> [schema]",
        ],
    ),
    "webhook step values": (
        """
        flow: x
        steps:
          - id: a
            webhook: 3
            method: get order
            parameters: [call, call, flow]
            params: {x-y: 1}
        """,
        [
            "f.yaml:5:14: error: 'webhook' must be a string, got a number [schema]",
            "f.yaml:6:13: error: 'method' must be a method name: letters, digits, '_' and '-', "
            "not starting with a digit or '-' [schema]",
            "f.yaml:7:17: error: 'parameters' must not contain the same item twice [schema]",
            "f.yaml:7:30: error: item 3 of 'parameters' must be one of: call, flow.key, "
            "user.key [schema]",
            "f.yaml:8:14: error: key 'x-y' in 'params' must be a variable name: letters, digits "
            "and '_', not starting with a digit (such as order_id) [schema]",
        ],
    ),
    "both kinds: the operation step wins": (
        """
        flow: x
        steps:
          - {id: a, operation: assign, set: {a: 1}, webhook: crm}
        """,
        [
            "f.yaml:4:45: error: unknown key 'webhook' in operation step (expected one of: "
            "description, id, next, operation, set, when) [schema]"
        ],
    ),
    "empty steps": (
        "flow: x\nsteps: []\n",
        ["f.yaml:2:8: error: 'steps' must not be empty [schema]"],
    ),
}

PROJECT_CASES = {
    "version, http and top level": (
        """
        version: 2
        http: {enabled: maybe, allowlist: crm.example.com}
        extra: 1
        """,
        [
            "f.yaml:2:10: error: 'version' must be 1 [schema]",
            "f.yaml:3:17: error: 'enabled' must be a boolean, got a string [schema]",
            "f.yaml:3:35: error: 'allowlist' must be a list, got a string [schema]",
            "f.yaml:4:1: error: unknown key 'extra' in the project file (expected one of: "
            "delivery, history, http, serve, state, user_keys, version, webhooks, workers) "
            "[schema]",
        ],
    ),
    "webhook values": (
        """
        version: 1
        webhooks:
          crm:
            url: crm.example.com/flows
            method: FETCH
            body: xml
            timeout: 90
            urll: x
        """,
        [
            "f.yaml:5:10: error: 'url' must be an absolute URL such as https://host/path [schema]",
            "f.yaml:6:13: error: 'method' must be one of: DELETE, GET, PATCH, POST, PUT [schema]",
            "f.yaml:7:11: error: 'body' must be one of: form, json, none [schema]",
            "f.yaml:8:14: error: 'timeout' must be at most 60 [schema]",
            "f.yaml:9:5: error: unknown key 'urll' in webhook 'crm' (expected one of: auth, "
            "body, default, headers, method, methods, retry, signing_secret, timeout, url); "
            "did you mean 'url'? [schema]",
        ],
    ),
    "missing url, bad names, low timeout": (
        """
        version: 1
        webhooks:
          9crm: {timeout: 0.5}
        user_keys: {a-b: 1}
        """,
        [
            "f.yaml:4:3: error: key '9crm' in 'webhooks' must match [A-Za-z_][A-Za-z0-9_-]* "
            "[schema]",
            "f.yaml:4:9: error: missing required key 'url' [schema]",
            "f.yaml:4:19: error: 'timeout' must be at least 1 [schema]",
            "f.yaml:5:13: error: key 'a-b' in 'user_keys' must match [A-Za-z_][A-Za-z0-9_]* "
            "[schema]",
        ],
    ),
    "auth forms": (
        """
        version: 1
        webhooks:
          a: {url: "https://a", auth: basic}
          b: {url: "https://b", auth: {}}
          c: {url: "https://c", auth: {digest: {}}}
          d: {url: "https://d", auth: {basic: {username: u}}}
        """,
        [
            "f.yaml:4:31: error: 'auth' must be 'none', {basic: {username, password}} or "
            "{bearer: {token}} [schema]",
            "f.yaml:5:31: error: 'auth' must have exactly one of: basic, bearer [schema]",
            "f.yaml:6:32: error: unknown key 'digest' in 'auth' (expected one of: basic, "
            "bearer) [schema]",
            "f.yaml:7:39: error: missing required key 'password' [schema]",
        ],
    ),
    "headers and secrets": (
        """
        version: 1
        webhooks:
          crm:
            url: https://crm
            headers:
              X-Team: ivr
              X-Count: 3
              bad header: x
              X-Key: {secrt: KEY}
              X-Other: {secret: not a name}
        """,
        [
            "f.yaml:8:16: error: a header value must be a string or a secret {secret: NAME} "
            "[schema]",
            "f.yaml:9:7: error: key 'bad header' in 'headers' must be an HTTP header name "
            "(letters, digits and !#$%&'*+.^_`|~-) [schema]",
            "f.yaml:10:14: error: missing required key 'secret' [schema]",
            "f.yaml:10:15: error: unknown key 'secrt' in secret reference (expected one of: "
            "secret); did you mean 'secret'? [schema]",
            "f.yaml:11:25: error: 'secret' must match [A-Za-z_][A-Za-z0-9_]* [schema]",
        ],
    ),
    "methods and response paths": (
        """
        version: 1
        webhooks:
          crm:
            url: https://crm
            signing_secret: [a]
            methods:
              get:
                respons: {}
              put:
                response: {order id: status, x: "a..b", y: 3}
        """,
        [
            "f.yaml:6:21: error: 'signing_secret' must be a secret {secret: NAME}, got a list "
            "[schema]",
            "f.yaml:9:9: error: unknown key 'respons' in webhook method 'get' (expected one "
            "of: description, response); did you mean 'response'? [schema]",
            "f.yaml:11:20: error: key 'order id' in 'response' must match "
            "[A-Za-z_][A-Za-z0-9_]* [schema]",
            "f.yaml:11:41: error: 'x' must be a dotted path such as order.id or items.0.sku "
            "[schema]",
            "f.yaml:11:52: error: 'y' must be a string, got a number [schema]",
        ],
    ),
    "state and delivery": (
        """
        version: 1
        state: ""
        delivery: {retry_schedule: [], lease: 0}
        ---
        """,
        [
            "f.yaml:3:8: error: 'state' must not be empty [schema]",
            "f.yaml:4:28: error: 'retry_schedule' must not be empty [schema]",
            "f.yaml:4:39: error: 'lease' must be greater than 0 [schema]",
        ],
    ),
    "retry schedule items": (
        "version: 1\ndelivery: {retry_schedule: [5, 0, -1, soon]}\n",
        [
            "f.yaml:2:32: error: item 2 of 'retry_schedule' must be greater than 0 [schema]",
            "f.yaml:2:35: error: item 3 of 'retry_schedule' must be greater than 0 [schema]",
            "f.yaml:2:39: error: item 4 of 'retry_schedule' must be a number, got a string "
            "[schema]",
        ],
    ),
}


@pytest.mark.parametrize("text, expected", FLOW_CASES.values(), ids=list(FLOW_CASES))
def test_flow_messages(text, expected):
    assert check(text, "flow") == expected


@pytest.mark.parametrize("text, expected", PROJECT_CASES.values(), ids=list(PROJECT_CASES))
def test_project_messages(text, expected):
    assert check(text.split("---")[0], "project") == expected


def test_plaintext_secrets_are_reported_without_their_value():
    found = check(
        """
        version: 1
        webhooks:
          a:
            url: https://a
            auth: {basic: {username: u, password: hunter2-s3cret}}
            signing_secret: 123456789
          b: {url: "https://b", auth: {bearer: {token: "tok-s3cret"}}}
        """,
        "project",
    )
    assert found == [
        "f.yaml:6:43: error: 'password' holds a plaintext secret; write {secret: NAME} and "
        "set NAME in the environment [plaintext-secret]",
        "f.yaml:7:21: error: 'signing_secret' holds a plaintext secret; write {secret: NAME} "
        "and set NAME in the environment [plaintext-secret]",
        "f.yaml:8:48: error: 'token' holds a plaintext secret; write {secret: NAME} and set "
        "NAME in the environment [plaintext-secret]",
    ]
    assert not any("s3cret" in line or "123456789" in line for line in found)


def test_bad_values_are_never_quoted():
    value = "VALUE-4f2a"
    found = check(
        f"""
        version: 1
        http: {{enabled: {value}, allowlist: {value}}}
        state: [{value}]
        webhooks:
          crm:
            url: {value}
            method: {value}
            body: {value}
            timeout: {value}
            auth: {value}
            headers: {{X-A: [{value}]}}
            methods: {{m: {{response: {{k: {value}..x}}}}}}
        """,
        "project",
    )
    assert len(found) == 10
    assert not any(value in line for line in found)


def test_problems_are_sorted_by_position():
    found = check(
        """
        flow: x
        steps:
          - {id: b, operation: assign, set: {a: 1}, zz: 1, aa: 2}
          - {id: c}
        """
    )
    assert [line.split(": error")[0] for line in found] == [
        "f.yaml:4:45",
        "f.yaml:4:52",
        "f.yaml:5:5",
    ]


# -- on-complete payloads ---------------------------------------------------------------


def test_payload_errors_name_the_location():
    bad = {
        **PAYLOAD,
        "flowStatus": "DONE",
        "error": {"step": "lookup", "reason": 7},
        "callDetails": [{"incoming": "yes", "callId": "c"}],
        "keys": [{"name": "attempts", "value": 1}],
        "startedAt": "2026-11-28T10:00:00Z",
        "extra": True,
    }
    del bad["cli"]
    assert schema.payload_errors(bad) == [
        "callDetails[0].incoming: 'incoming' must be a boolean, got a string",
        "callDetails[0]: unknown key 'callId' in call detail (expected one of: calleeNumber, "
        "cdrId, connectTime, didNumber, duration, endTime, hangupCause, incoming, "
        "startTime)",
        "error.reason: 'reason' must be a string, got a number",
        "error: missing required key 'message'",
        "flowStatus: 'flowStatus' must be one of: COMPLETED, FAILED",
        "keys[0].name: 'name' must start with $flow.key.",
        "keys[0].value: 'value' must be a string or null, got a number",
        "missing required key 'cli'",
        "startedAt: 'startedAt' must be an ISO 8601 time with milliseconds and offset, such "
        "as 2026-11-28T10:00:00.000+00:00",
        "unknown key 'extra' in the payload (expected one of: callDetails, cli, endedAt, "
        "error, flow, flowStatus, keys, phonon-uuid, recordingUrls, request-id, startedAt)",
    ]


def test_payload_that_is_not_an_object():
    assert schema.payload_errors([]) == ["expected a mapping, got a list"]


# -- alternatives (anyOf / oneOf) ---------------------------------------------------------


def test_alternatives_report_the_best_branch_or_one_summary():
    validator = Draft202012Validator(
        {
            "type": "object",
            "properties": {
                "a": {
                    "anyOf": [
                        {"type": "string"},
                        {
                            "type": "object",
                            "properties": {"n": {"type": "integer"}},
                            "additionalProperties": False,
                        },
                    ]
                },
            },
        }
    )

    def messages(data):
        problems = schema_errors.explain_all(validator.iter_errors(data), "the document")
        return sorted(p.message for p in problems)

    assert messages({"a": {"n": "x"}}) == ["'n' must be an integer, got a string"]
    assert messages({"a": 3}) == ["'a' matches none of its allowed forms"]


def test_key_names_are_shown_on_one_line_and_shortened():
    long_key = "k" * 80
    steps = "steps: [{id: a, operation: assign, set: {a: 1}}]\n"
    found = check(f'flow: x\n{steps}"a\\nb": 1\n{long_key}: 2\n')
    assert found == [
        "f.yaml:3:1: error: unknown key 'a\\nb' in the flow (expected one of: description, "
        "flow, keys, on_complete, steps) [schema]",
        f"f.yaml:4:1: error: unknown key '{'k' * 57}...' in the flow (expected one of: "
        "description, flow, keys, on_complete, steps) [schema]",
    ]


# -- the quick check ----------------------------------------------------------------------


def _documents():
    """Every YAML document of the golden cases, the example project and its flows."""
    files = sorted((ROOT / "tests" / "cases").rglob("*.yaml")) + sorted((ROOT / "flows").glob("*"))
    for path in [*files, ROOT / "flowrunner.yaml"]:
        try:
            data = load_path(path).data
        except LoadError:
            continue  # refused before any schema is asked
        kind = "project" if path.name == "flowrunner.yaml" else "flow"
        yield pytest.param(kind, data, id=str(path.relative_to(ROOT)))


@pytest.mark.parametrize(("kind", "data"), list(_documents()))
def test_quick_check_agrees_with_jsonschema_on_every_case(kind, data):
    expected = schema_errors.validator(kind, schema.inlined(kind)).is_valid(data)
    assert fastcheck.is_valid(schema.inlined(kind), data) is expected


def test_quick_check_decides_the_payload_schema_too():
    assert fastcheck.is_valid(schema.inlined("on-complete"), PAYLOAD)
    assert not fastcheck.is_valid(schema.inlined("on-complete"), {**PAYLOAD, "flowStatus": 1})


@pytest.mark.parametrize(
    ("sub", "instance", "valid"),
    [
        ({"type": "integer"}, 1.0, True),
        ({"type": "integer"}, True, False),
        ({"type": "number"}, False, False),
        ({"enum": [1]}, True, False),
        ({"const": 1}, 1.0, True),
        ({"const": {"a": [True]}}, {"a": [1]}, False),
        ({"uniqueItems": True}, [1, True], True),
        ({"uniqueItems": True}, [1, 1.0], False),
        ({"pattern": "b"}, "abc", True),
        ({"pattern": "^b"}, "abc", False),
        ({"pattern": "^b"}, 3, True),
        ({"minLength": 2}, "é", False),
        ({"exclusiveMinimum": 0}, 0, False),
        ({"minimum": 0}, True, True),
        ({"minimum": 0}, float("nan"), True),
        ({"exclusiveMaximum": 1}, float("nan"), True),
        ({"propertyNames": {"pattern": "^[a-z]+$"}}, {"ok": 1, "Not": 2}, False),
        ({"additionalProperties": False, "patternProperties": {"^x-": True}}, {"x-a": 1}, True),
        ({"if": {"required": ["a"]}, "then": {"required": ["b"]}}, {"a": 1}, False),
        ({"if": {"required": ["a"]}, "else": {"required": ["b"]}}, {}, False),
        ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, 1, False),
        ({"not": {"type": "string"}}, 1, True),
        ({"format": "email"}, "not an email", True),
    ],
)
def test_quick_check_means_what_jsonschema_means(sub, instance, valid):
    assert Draft202012Validator(sub).is_valid(instance) is valid
    assert fastcheck.is_valid(sub, instance) is valid


@pytest.mark.parametrize(
    "sub", [{"$ref": "#/$defs/a"}, {"dependentRequired": {"a": ["b"]}}, {"prefixItems": [True]}]
)
def test_quick_check_gives_no_answer_for_keywords_it_does_not_know(sub):
    # "not valid, or not known": the caller asks jsonschema
    assert fastcheck.is_valid(sub, {}) is False
