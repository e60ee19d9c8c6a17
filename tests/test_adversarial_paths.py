"""Hostile file paths and request attributes, each through a real Mount over the daemon's socket.

Paths are refused up front, in one whole-string check, when the driver would fail later (a
component over 255 bytes, a file that is also another file's directory) or when the name would
escape or disguise itself (``..``, absolute, NUL, backslash, control and bidi characters).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from keygate_dev.driver_client import Pod, attributes, mount_request
from provider.wire import service_pb2 as pb
from tests.adversarial import SECRET, refused, released

SPC_ERROR = "InvalidSecretProviderClass"
BAD_REQUEST = "InvalidRequest"


def yaml_quoted(text: str) -> str:
    """A YAML double-quoted scalar holding exactly ``text`` (every non-printable escaped)."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def objects(node_key: Any, *aliases: str) -> dict[str, str]:
    items = []
    for index, alias in enumerate(aliases):
        name = f"obj{index}"
        sealed = node_key.seal(SECRET, "default", name)
        items.append(f"- objectName: {name}\n  objectAlias: {yaml_quoted(alias)}\n  sealed: {sealed}")
    return {"objects": "\n".join(items)}


def mount_paths(node_key: Any, *aliases: str) -> pb.MountRequest:
    return mount_request("paths", objects(node_key, *aliases), Pod())


def _long_path(total: int) -> str:
    """A path of exactly ``total`` bytes made of 240-byte components."""
    parts: list[str] = []
    while sum(map(len, parts)) + len(parts) + 240 < total:
        parts.append("d" * 240)
    rest = total - (sum(map(len, parts)) + len(parts))
    return "/".join([*parts, "f" * rest])


ONE_PATH_REFUSED: list[tuple[str, str, str]] = [
    ("component_256_bytes", "a" * 256, "is 256 bytes long; each part of a path may have at most 255 bytes"),
    ("component_256_bytes_two_byte_chars", "\u00e9" * 128, "is 256 bytes long"),
    ("component_256_bytes_emoji", "\U0001f511" * 64, "is 256 bytes long"),
    ("component_256_bytes_in_the_middle", "x/" + "b" * 256 + "/y", "is 256 bytes long"),
    ("path_4097_bytes", _long_path(4097), "is 4097 bytes long; the limit is 4096"),
    ("path_5000_bytes", "a/" * 2500, "the limit is 4096"),
    ("nul", "a\x00b", "contains a NUL or backslash"),
    ("trailing_nul", "a\x00", "contains a NUL or backslash"),
    ("backslash", "a\\b", "contains a NUL or backslash"),
    ("backslash_dotdot", "..\\etc\\passwd", "contains a NUL or backslash"),
    ("absolute", "/etc/passwd", "is absolute"),
    ("double_slash_absolute", "//etc/passwd", "is absolute"),
    ("dotdot", "..", "contains '..'"),
    ("dotdot_first", "../x", "contains '..'"),
    ("dotdot_escape", "a/../../x", "contains '..'"),
    ("dotdot_last", "a/..", "contains '..'"),
    ("dot_then_dotdot", "./../x", "contains '..'"),
    ("writer_data_dir", "..data", "does not name a file inside the volume"),
    ("writer_data_dir_child", "..data/x", "does not name a file inside the volume"),
    ("writer_timestamp_dir", "..2026_12_02_00_00_00.123", "does not name a file inside the volume"),
    ("three_dots", "...", "does not name a file inside the volume"),
    ("dot", ".", "does not name a file inside the volume"),
    ("dot_slash", "./", "does not name a file inside the volume"),
    ("dot_slash_dot", "./.", "does not name a file inside the volume"),
    ("space_only", " ", "the file name is empty"),
    ("tab_only", "\t", "the file name is empty"),
    ("newline", "a\nb", "unprintable character U+000A"),
    ("carriage_return", "a\rb", "unprintable character U+000D"),
    ("escape", "a\x1b[31mb", "unprintable character U+001B"),
    ("delete", "a\x7fb", "unprintable character U+007F"),
    ("c1_next_line", "a\x85b", "unprintable character U+0085"),
    ("bidi_override", "txt.\u202eexe", "unprintable character U+202E"),
    ("bidi_isolate", "a\u2066b", "unprintable character U+2066"),
    ("zero_width_space", "a\u200bb", "unprintable character U+200B"),
    ("byte_order_mark", "\ufeffa", "unprintable character U+FEFF"),
    ("line_separator", "a\u2028b", "unprintable character U+2028"),
    ("paragraph_separator", "a\u2029b", "unprintable character U+2029"),
    # refused by the YAML reader or by the path check, whichever sees it first
    ("lone_surrogate", "a\ud800b", "objects"),
]


@pytest.mark.parametrize(
    ("case", "alias", "fragment"), ONE_PATH_REFUSED, ids=[c[0] for c in ONE_PATH_REFUSED]
)
def test_path_refused(start_daemon, node_key, case, alias, fragment):
    d = start_daemon()
    details = refused(d, mount_paths(node_key, alias), SPC_ERROR, fragment)
    assert "\n" not in details and "\x1b" not in details and "\u202e" not in details


TWO_PATHS_REFUSED: list[tuple[str, tuple[str, str], str]] = [
    ("file_then_child", ("a", "a/b"), "needs 'a' to be a directory, but objects[0] 'obj0' writes a file 'a'"),
    (
        "child_then_file",
        ("a/b", "a"),
        "file 'a' is also a directory, because objects[0] 'obj0' writes a file",
    ),
    ("deep_file_then_child", ("x/y", "x/y/z"), "needs 'x/y' to be a directory"),
    ("deep_child_then_top", ("x/y/z", "x"), "file 'x' is also a directory"),
    ("deep_child_then_middle", ("x/y/z", "x/y"), "file 'x/y' is also a directory"),
    ("file_then_normalised_child", ("a", "./a//b"), "needs 'a' to be a directory"),
    ("slash_file_then_child", ("a/", "a/b"), "needs 'a' to be a directory"),
    ("same_after_dot_slash", ("a", "./a"), "file 'a' is also written by objects[0] 'obj0'"),
    ("same_after_trailing_slash", ("a", "a/"), "is also written by objects[0]"),
    ("same_after_double_slash", ("a/b", "a//b"), "is also written by objects[0]"),
    ("same_after_dot_component", ("a/./b", "a/b"), "is also written by objects[0]"),
]


@pytest.mark.parametrize(
    ("case", "aliases", "fragment"), TWO_PATHS_REFUSED, ids=[c[0] for c in TWO_PATHS_REFUSED]
)
def test_colliding_paths_refused(start_daemon, node_key, case, aliases, fragment):
    d = start_daemon()
    refused(d, mount_paths(node_key, *aliases), SPC_ERROR, "objects[1] 'obj1'", fragment)


PATHS_RELEASED: list[tuple[str, tuple[str, ...], list[str]]] = [
    ("component_255_bytes", ("a" * 255,), ["a" * 255]),
    ("component_255_bytes_two_byte_chars", ("\u00e9" * 127 + "x",), ["\u00e9" * 127 + "x"]),
    ("path_4096_bytes", (_long_path(4096),), [_long_path(4096)]),
    ("dot_slash", ("./a",), ["a"]),
    ("double_slash", ("a//b",), ["a/b"]),
    ("trailing_slash", ("a/",), ["a"]),
    ("dot_component", ("a/./b",), ["a/b"]),
    ("unicode", ("\U0001f511/k", "\u043a\u043b\u044e\u0447"), ["\U0001f511/k", "\u043a\u043b\u044e\u0447"]),
    ("leading_space", (" a",), [" a"]),
    ("dots_inside_a_name", ("a..b", "c/..d"), ["a..b", "c/..d"]),
    ("siblings_share_a_directory", ("a/b", "a/c"), ["a/b", "a/c"]),
    ("prefix_without_a_slash", ("ab", "a"), ["ab", "a"]),
    ("prefix_with_a_dot", ("a", "a.b"), ["a", "a.b"]),
    ("prefix_of_a_directory_name", ("a-b/c", "a"), ["a-b/c", "a"]),
]


@pytest.mark.parametrize(("case", "aliases", "paths"), PATHS_RELEASED, ids=[c[0] for c in PATHS_RELEASED])
def test_paths_released(start_daemon, node_key, case, aliases, paths):
    d = start_daemon()
    assert [path for path, _ in released(d, mount_paths(node_key, *aliases))] == paths


# --- the request's attributes, secrets and permission -----------------------------------------

POD_NAME = "csi.storage.k8s.io/pod.name"
NAMESPACE = "csi.storage.k8s.io/pod.namespace"
UID = "csi.storage.k8s.io/pod.uid"
SA = "csi.storage.k8s.io/serviceAccount.name"
TOKENS = "csi.storage.k8s.io/serviceAccount.tokens"


def _attrs(node_key: Any, **changes: Any) -> str:
    data = json.loads(attributes("s", objects(node_key, "db"), Pod()))
    for key, value in changes.items():
        name = {"pod_name": POD_NAME, "namespace": NAMESPACE, "uid": UID, "sa": SA, "tokens": TOKENS}[key]
        data[name] = value
    return json.dumps(data)


def _request(
    attrs: str, *, secrets: str = "{}", permission: str = "420", target: str = "/t"
) -> pb.MountRequest:
    return pb.MountRequest(attributes=attrs, secrets=secrets, target_path=target, permission=permission)


ATTRIBUTE_CASES: list[tuple[str, Any, str]] = [
    (
        "pod_name_number",
        lambda k: _attrs(k, pod_name=7),
        "the value of 'csi.storage.k8s.io/pod.name' must be a string",
    ),
    ("pod_name_null", lambda k: _attrs(k, pod_name=None), "must be a string"),
    ("pod_name_list", lambda k: _attrs(k, pod_name=["app-0"]), "must be a string"),
    ("pod_name_object", lambda k: _attrs(k, pod_name={"name": "app-0"}), "must be a string"),
    ("pod_name_bool", lambda k: _attrs(k, pod_name=True), "must be a string"),
    ("pod_name_path", lambda k: _attrs(k, pod_name="../secrets/x"), "is not a DNS subdomain"),
    ("pod_name_space", lambda k: _attrs(k, pod_name="app 0"), "is not a DNS subdomain"),
    ("pod_name_upper_case", lambda k: _attrs(k, pod_name="App-0"), "is not a DNS subdomain"),
    ("pod_name_trailing_newline", lambda k: _attrs(k, pod_name="app-0\n"), "is not a DNS subdomain"),
    ("pod_name_254_chars", lambda k: _attrs(k, pod_name="a" * 254), "is not a DNS subdomain"),
    ("namespace_upper_case", lambda k: _attrs(k, namespace="Default"), "is not a DNS label"),
    ("namespace_trailing_newline", lambda k: _attrs(k, namespace="default\n"), "is not a DNS label"),
    ("namespace_dot", lambda k: _attrs(k, namespace="default.x"), "is not a DNS label"),
    ("namespace_64_chars", lambda k: _attrs(k, namespace="n" * 64), "is not a DNS label"),
    ("namespace_empty", lambda k: _attrs(k, namespace=""), "lack the pod identity"),
    ("service_account_path", lambda k: _attrs(k, sa="app/../admin"), "is not a DNS subdomain"),
    ("service_account_unicode", lambda k: _attrs(k, sa="\u0430pp"), "is not a DNS subdomain"),
    ("uid_newline", lambda k: _attrs(k, uid="6c3f8c51\n"), "is not a UID"),
    ("uid_space", lambda k: _attrs(k, uid="6c3f 8c51"), "is not a UID"),
    ("uid_129_chars", lambda k: _attrs(k, uid="u" * 129), "is not a UID"),
    ("uid_nul", lambda k: _attrs(k, uid="u\x00"), "is not a UID"),
    ("duplicate_pod_name_key", lambda k: _attrs(k)[:-1] + f', "{POD_NAME}": "victim-0"}}', "name the key"),
    ("tokens_not_a_string", lambda k: _attrs(k, tokens={"keygate": {"token": "x"}}), "must be a string"),
    ("tokens_json_list", lambda k: _attrs(k, tokens="[]"), "must be a JSON object keyed by audience"),
    ("tokens_token_number", lambda k: _attrs(k, tokens='{"keygate": {"token": 5}}'), "has no string 'token'"),
    (
        "tokens_token_null",
        lambda k: _attrs(k, tokens='{"keygate": {"token": null}}'),
        "has no string 'token'",
    ),
    ("tokens_entry_string", lambda k: _attrs(k, tokens='{"keygate": "eyJ"}'), "has no string 'token'"),
    ("tokens_not_json", lambda k: _attrs(k, tokens="{keygate: x}"), "is not valid JSON"),
    (
        "tokens_duplicate_audience",
        lambda k: _attrs(k, tokens='{"keygate": {"token": "a"}, "keygate": {"token": "b"}}'),
        "names audience 'keygate' twice",
    ),
    ("attributes_array", lambda k: "[]", "must be a JSON object"),
    ("attributes_null", lambda k: "null", "must be a JSON object"),
    ("attributes_string", lambda k: '"x"', "must be a JSON object"),
    ("attributes_nan_value", lambda k: _attrs(k)[:-1] + ', "x": NaN}', "must be a string"),
    ("attributes_deeply_nested", lambda k: '{"x": ' + "[" * 100000 + "]" * 100000 + "}", "JSON"),
]


@pytest.mark.parametrize(("case", "make", "fragment"), ATTRIBUTE_CASES, ids=[c[0] for c in ATTRIBUTE_CASES])
def test_attribute_tricks(start_daemon, node_key, case, make, fragment):
    d = start_daemon()
    refused(d, _request(make(node_key)), BAD_REQUEST, fragment)


OTHER_FIELD_CASES: list[tuple[str, dict[str, str], str]] = [
    ("secrets_value_number", {"secrets": '{"k": 1}'}, "secrets: the value of 'k' must be a string"),
    ("secrets_array", {"secrets": "[]"}, "secrets must be a JSON object"),
    ("secrets_duplicate_key", {"secrets": '{"k": "a", "k": "b"}'}, "name the key 'k' twice"),
    ("permission_float", {"permission": "420.0"}, "must be a decimal integer"),
    ("permission_bool", {"permission": "true"}, "must be a decimal integer"),
    ("permission_negative", {"permission": "-1"}, "must be a decimal integer"),
    ("permission_hex", {"permission": "0x1a4"}, "is not a decimal number"),
    ("permission_too_big", {"permission": "512"}, "must be a decimal integer between 0 and 511"),
    ("permission_string", {"permission": '"420"'}, "must be a decimal integer"),
    ("target_path_nul", {"target": "/t\x00/x"}, "target_path contains a NUL byte"),
]


@pytest.mark.parametrize(
    ("case", "fields", "fragment"), OTHER_FIELD_CASES, ids=[c[0] for c in OTHER_FIELD_CASES]
)
def test_request_field_tricks(start_daemon, node_key, case, fields, fragment):
    d = start_daemon()
    refused(d, _request(_attrs(node_key), **fields), BAD_REQUEST, fragment)


def test_a_good_raw_request_releases(start_daemon, node_key):
    """The raw requests above differ from this one only in the field under attack."""
    d = start_daemon()
    assert released(d, _request(_attrs(node_key))) == [("db", SECRET)]


@pytest.mark.parametrize(
    ("aliases", "flagged"),
    [
        (("a", "a/b"), "needs 'a' to be a directory"),
        (("a/b", "a"), "is also a directory"),
        (("a", "ab"), None),
    ],
    ids=["file_then_child", "child_then_file", "no_collision"],
)
def test_lint_flags_the_same_collisions(tmp_path, capsys, node_key, aliases, flagged):
    """``keygate lint`` applies the daemon's path rule, so it warns before anyone mounts."""
    from provider import lint

    items = "".join(
        f"      - objectName: obj{i}\n        objectAlias: {alias}\n        sealed: x\n"
        for i, alias in enumerate(aliases)
    )
    spc = tmp_path / "spc.yaml"
    spc.write_text(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n"
        "metadata: {name: s, namespace: default}\nspec:\n  provider: keygate\n"
        f"  parameters:\n    objects: |\n{items}"
    )
    lint.main(str(spc), None, namespace=None, recipients=(), strict=False)
    out = capsys.readouterr().out
    if flagged is None:
        assert "directory" not in out, out
    else:
        assert flagged in out and "error" in out, out
