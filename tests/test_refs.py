"""Names and refs: NAME-vN, NAME (latest), NAME@ALIAS."""

import pytest

from adaptr.errors import UsageError
from adaptr.peftdir import default_name
from adaptr.refs import Ref, check_adapter_name, check_name, format_ref, parse_ref


@pytest.mark.parametrize("text, expected", [
    ("sft-v2", Ref("sft", version=2)),
    ("sft", Ref("sft")),
    ("sft@prod", Ref("sft", alias="prod")),
    ("my.adapter_1-v10", Ref("my.adapter_1", version=10)),
    ("a-v2-v3", Ref("a-v2", version=3)),
    ("llama-3.1-8b-sft", Ref("llama-3.1-8b-sft")),
    ("x-v", Ref("x-v")),
])
def test_parse_ref(text, expected):
    ref = parse_ref(text)
    assert ref == expected
    assert str(ref) == text


@pytest.mark.parametrize("bad", ["", "../x", "..", "a/b", "-sft", ".hidden", "a..b", "sft@", "@prod",
                                 "sft@../x", "sft v2", "x" * 97, "sft@prod@x", "naïve"])
def test_parse_ref_rejects(bad):
    with pytest.raises(UsageError) as info:
        parse_ref(bad)
    assert info.value.hint


def test_check_name_limits():
    assert check_name("a" * 96) == "a" * 96
    assert check_name("A9._-z") == "A9._-z"
    with pytest.raises(UsageError):
        check_name("a" * 97)
    with pytest.raises(UsageError):
        check_name(None)  # type: ignore[arg-type]


def test_adapter_name_must_not_look_versioned():
    with pytest.raises(UsageError, match="ends like a version"):
        check_adapter_name("sft-v2")
    assert check_adapter_name("sft-v") == "sft-v"
    assert format_ref("sft", 3) == "sft-v3"


@pytest.mark.parametrize("directory, name", [
    ("my adapter", "my-adapter"),
    ("checkpoint-500", "checkpoint-500"),
    ("sft-v3", "sft"),
    ("..weird..dir", "weird.dir"),
    ("___", "adapter"),
])
def test_default_import_name(tmp_path, directory, name):
    path = tmp_path / directory
    path.mkdir()
    assert default_name(path) == name
    check_adapter_name(default_name(path))
