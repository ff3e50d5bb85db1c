"""Extraction end to end on real git repositories."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core.base_models import load_tokenizer
from core.budget import TokenBudget
from core.config import ExtractConfig, ValidateConfig
from core.errors import InputError
from core.index.context import INSTRUCTION
from core.reports import ExtractReport
from core.schemas import Sample
from tasks.extract.run import extract_dataset
from tests.helpers.gitrepo import commit, git

AWS_KEY = "AKIAIOSFODNN7EXAMPLQ"

PARSER_PY = '''"""Parsing of configuration files into typed settings objects for the application."""

import json


def parse_config(text):
    """Parse a JSON configuration string and return the settings dictionary."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("config must be an object")
    return data


def undocumented_helper(values):
    total = 0
    for v in values:
        total += v
    return total


class Loader:
    """Load configuration files from a directory on disk."""

    def load(self, path):
        """Read the file at path and parse it as configuration."""
        with open(path) as fh:
            text = fh.read()
        return parse_config(text)
'''

SECRET_PY = f'''def connect_to_cloud():
    """Connect to the cloud storage service with the deploy credentials."""
    key_id = "{AWS_KEY}"
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    return make_client(key_id, secret)
'''

JS = """/**
 * Format a user's display name from first and last name.
 * @param {string} first
 */
export function formatName(first, last) {
  const full = `${first} ${last}`;
  return full.trim();
}
"""

README = """# Widget

Widget turns configuration files into running services with one command and no boilerplate.

## Installation

Install the package with pip, then run `widget init` in your project directory to create a config.
"""


def _files(n_modules: int = 12) -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {
        "pkg/parser.py": PARSER_PY,
        "pkg/cloud.py": SECRET_PY,
        "web/name.js": JS,
        "README.md": README,
    }
    for i in range(n_modules):
        files[f"pkg/mod{i}.py"] = (
            f'def compute_{i}(a, b):\n    """Combine a and b using rule number {i} of the engine."""\n'
            f"    c = a * {i} + b\n    d = c - {i}\n    return d\n"
        )
    return files


@pytest.fixture(scope="module")
def budget(cache_dir: Path) -> TokenBudget:
    """The default budget as `token_budget(settings)` builds it: SmolLM2 chat template, validation bounds."""
    cfg = ValidateConfig()
    return TokenBudget(load_tokenizer("smollm2-135m", cache_dir), cfg.min_tokens, cfg.max_tokens)


@pytest.fixture
def repo(make_repo, tmp_path: Path) -> Path:
    r = make_repo(_files())
    commit(
        r,
        {"pkg/parser.py": PARSER_PY.replace("return data", "return dict(data)")},
        "Return a plain dict from parse_config so callers can mutate it",
    )
    return r


def _read(out: Path) -> tuple[list[dict], list[dict], dict]:
    train = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    evals = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    return train, evals, json.loads((out / "stats.json").read_text())


def test_samples_follow_the_schema_and_cover_every_task(
    repo: Path, tmp_path: Path, budget: TokenBudget
) -> None:
    out = tmp_path / "ds"
    extract_dataset(repo, out, ExtractConfig(), tmp_path / "cache", budget)
    train, evals, stats = _read(out)
    samples = train + evals
    for s in samples:
        Sample.model_validate(s)
    tasks = {s["meta"]["task"] for s in samples}
    assert tasks == {"explain", "docstring", "implement", "locate", "summarize_module", "doc_qa", "commit"}
    assert stats["samples"]["total"] == len(samples)
    head = git(repo, "rev-parse", "HEAD")
    assert all(s["meta"]["commit"] == head for s in samples if s["meta"]["task"] != "commit")


def test_answers_are_grounded_in_the_repository(repo: Path, tmp_path: Path, budget: TokenBudget) -> None:
    out = tmp_path / "ds"
    extract_dataset(repo, out, ExtractConfig(eval_fraction=0.0), tmp_path / "cache", budget)
    train, _, _ = _read(out)
    by = {
        # the user's question and the answer (a sample with repo context has a system message first,
        # and an answer with its oracle in the context names its source last)
        (s["meta"]["task"], s["messages"][-2]["content"].split("\n")[0]): s["messages"][-1]["content"].split(
            "\n\nSource: "
        )[0]
        for s in train
    }
    explain = [a for (t, q), a in by.items() if t == "explain" and "`parse_config`" in q]
    assert explain == ["Parse a JSON configuration string and return the settings dictionary."]
    locate = [a for (t, q), a in by.items() if t == "locate" and "`Loader.load`" in q]
    assert locate == ["`Loader.load` is defined in `pkg/parser.py` at line 24."]
    js = [a for (t, q), a in by.items() if t == "explain" and "`formatName`" in q]
    assert js == ["Format a user's display name from first and last name.\n@param {string} first"]
    commits = [s for s in train if s["meta"]["task"] == "commit"]
    assert [s["messages"][1]["content"] for s in commits] == [
        "Return a plain dict from parse_config so callers can mutate it"
    ]
    assert "-    return data" in commits[0]["messages"][0]["content"]


def test_undocumented_symbols_only_yield_code_and_location(
    repo: Path, tmp_path: Path, budget: TokenBudget
) -> None:
    out = tmp_path / "ds"
    extract_dataset(repo, out, ExtractConfig(eval_fraction=0.0), tmp_path / "cache", budget)
    train, _, _ = _read(out)
    tasks = {
        s["meta"]["task"]
        for s in train
        if "undocumented_helper" in s["messages"][-2]["content"]
        and s["meta"]["task"] not in ("summarize_module", "commit")  # these list or diff the whole file
    }
    assert tasks == {"locate", "implement"}


def test_planted_secret_never_reaches_a_sample(repo: Path, tmp_path: Path, budget: TokenBudget) -> None:
    out = tmp_path / "ds"
    extract_dataset(repo, out, ExtractConfig(), tmp_path / "cache", budget)
    raw = (out / "train.jsonl").read_text() + (out / "eval.jsonl").read_text()
    assert AWS_KEY not in raw and "bPxRfiCYEXAMPLEKEY" not in raw
    _, _, stats = _read(out)
    assert stats["dropped"]["secret"] >= 2  # explain/docstring/implement of connect_to_cloud


def test_split_is_by_file_and_deterministic(repo: Path, tmp_path: Path, budget: TokenBudget) -> None:
    out1, out2 = tmp_path / "a", tmp_path / "b"
    extract_dataset(repo, out1, ExtractConfig(eval_fraction=0.3), tmp_path / "cache1", budget)
    extract_dataset(repo, out2, ExtractConfig(eval_fraction=0.3), tmp_path / "cache2", budget)
    train, evals, _ = _read(out1)
    assert evals, "a 30% eval fraction over 16 files must hold some out"
    assert not {s["meta"]["source_path"] for s in train} & {s["meta"]["source_path"] for s in evals}
    assert all(s["meta"]["split"] == "eval" for s in evals) and all(
        s["meta"]["split"] == "train" for s in train
    )
    for name in ("train.jsonl", "eval.jsonl", "stats.json"):
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes()


def test_reextracting_after_a_one_file_commit_parses_one_file(
    repo: Path, tmp_path: Path, budget: TokenBudget
) -> None:
    cache = tmp_path / "cache"
    first = extract_dataset(repo, tmp_path / "ds", ExtractConfig(), cache, budget).model_dump()
    assert first["files"]["parsed"] == first["files"]["sources"] == 16
    commit(repo, {"pkg/mod3.py": '"""Changed module."""\n'}, "Rewrite mod3 as an empty module")
    second = extract_dataset(repo, tmp_path / "ds", ExtractConfig(), cache, budget).model_dump()
    assert second["files"]["parsed"] == 1 and second["files"]["cached"] == 15


def test_duplicates_and_ambiguous_locations_are_dropped(
    make_repo, tmp_path: Path, budget: TokenBudget
) -> None:
    body = (
        'def shared(x):\n    """Return the input value twice as a tuple pair."""\n'
        "    y = x\n    z = y\n    return (y, z)\n"
    )
    repo = make_repo(
        {"a/one.py": body, "b/two.py": body, "c/three.py": body.replace("tuple pair", "tuple  pair")}
    )
    out = tmp_path / "ds"
    extract_dataset(repo, out, ExtractConfig(eval_fraction=0.0), tmp_path / "cache", budget)
    train, _, stats = _read(out)
    explains = [s for s in train if s["meta"]["task"] == "explain"]
    assert len(explains) == 1  # the same function in three files teaches one thing
    assert stats["dropped"]["ambiguous_locate"] == 3  # `shared` is defined in 3 places: no single answer
    assert stats["dropped"]["exact_duplicate"] >= 4


def test_near_duplicates_are_dropped(make_repo, tmp_path: Path, budget: TokenBudget) -> None:
    doc = " ".join(f"word{i}" for i in range(150))
    repo = make_repo(
        {
            "a.py": f'def alpha(x):\n    """{doc} first."""\n    return x\n',
            "b.py": f'def beta(x):\n    """{doc} second."""\n    return x\n',
        }
    )
    extract_dataset(repo, tmp_path / "ds", ExtractConfig(eval_fraction=0.0), tmp_path / "cache", budget)
    _, _, stats = _read(tmp_path / "ds")
    assert stats["dropped"]["near_duplicate"] >= 2  # explain and docstring of beta


def test_hygiene_skips_are_counted(make_repo, tmp_path: Path, budget: TokenBudget) -> None:
    files: dict[str, str | bytes] = {
        **_files(2),
        "node_modules/lib/index.js": JS,
        "dist/bundle.js": JS,
        "web/app.min.js": JS,
        "web/bundle.js": "var a=1;" * 11000,
        "pkg/latin1.py": "# caf\xe9\n".encode("latin-1") + b"def f():\n    return 1\n",
        "pkg/blob.py": b"\x00\x01\x02binary",
        "pkg/big.py": "x = 1\n" * 200_000,
        "pkg/generated_pb2.py": "# Generated by the protocol buffer compiler.  DO NOT EDIT!\nx = 1\n",
        ".gitignore": "secrets/\n",
        "secrets/config.py": "def f():\n    return 1\n",
        "pkg/broken.py": "def broken(:\n",
    }
    repo = make_repo(files)
    (repo / "pkg" / "passwd.py").symlink_to("/etc/passwd")
    (repo / "pkg" / "alias.py").symlink_to("parser.py")
    git(repo, "add", "pkg/passwd.py", "pkg/alias.py")
    git(repo, "commit", "-q", "-m", "Add links to system and project files")
    stats = extract_dataset(
        repo, tmp_path / "ds", ExtractConfig(max_file_bytes=100_000), tmp_path / "cache", budget
    ).model_dump()
    assert stats["files"]["skipped"] == {
        "binary": 1,
        "generated": 1,
        "gitignored": 1,
        "minified": 2,
        "not_utf8": 1,
        "parse_error": 1,
        "symlink": 1,
        "symlink_outside_repo": 1,
        "too_large": 1,
        "vendored_or_generated_dir": 2,
    }
    raw = (tmp_path / "ds" / "train.jsonl").read_text() + (tmp_path / "ds" / "eval.jsonl").read_text()
    assert "root:x:0:0" not in raw and "node_modules" not in raw


def test_a_repository_without_sources_is_refused_and_nothing_is_written(
    make_repo, tmp_path: Path, budget: TokenBudget
) -> None:
    repo = make_repo({"data.bin": b"\x00\x01", "notes.txt": "hello"})
    out = tmp_path / "ds"
    with pytest.raises(InputError, match="no supported source files") as info:
        extract_dataset(repo, out, ExtractConfig(), tmp_path / "cache", budget, display="my-repo")
    assert str(tmp_path) not in str(info.value)
    assert not out.exists()


def test_an_empty_repository_is_refused(make_repo, tmp_path: Path, budget: TokenBudget) -> None:
    repo = make_repo()
    with pytest.raises(InputError, match="empty repository"):
        extract_dataset(repo, tmp_path / "ds", ExtractConfig(), tmp_path / "cache", budget, display="empty")


def test_samples_longer_than_the_budget_are_dropped_and_counted(
    make_repo, tmp_path: Path, budget: TokenBudget
) -> None:
    long_body = "\n".join(f"    value_{i} = compute_{i}(value_{i - 1})" for i in range(1, 60))
    repo = make_repo(
        {"big.py": f'def long_one(x):\n    """Run the long computation chain."""\n{long_body}\n'}
    )
    stats = extract_dataset(
        repo, tmp_path / "ds", ExtractConfig(max_sample_chars=1500), tmp_path / "cache", budget
    ).model_dump()
    assert stats["dropped"]["too_long"] == 3  # explain, docstring and implement carry the whole body
    assert stats["samples"]["by_task"] == {"locate": 1}


# One line of numbers renders to ~100 tokens: 24 of them are ~2,400 tokens in ~2,400 characters, under the
# cheap character prefilter (6,000) and over the default token budget (2,048).
_NUMBERS = ", ".join(str(i * 7919 % 1000) for i in range(24))
OVERLONG_PY = (
    'def lookup_table():\n    """Return the fixed lookup table of the checksum engine."""\n'
    + "".join(f"    t{i} = ({_NUMBERS})\n" for i in range(24))
    + "    return t0\n"
)
_PINS = "".join(f"pkg{i}=={i}.0.1 --hash=sha256:{f'{i:02x}' * 32}\n" for i in range(16))
BUMP_SUBJECT = "Bump the sixteen pinned packages of the release tooling"
BUMP_MESSAGE = BUMP_SUBJECT + "".join(
    f"\n\nUpdates `pkg{i}` from {i}.0.0 to {i}.0.1\n"
    f"- [Commits](https://example.com/pkg{i}/compare/{f'{i:02x}' * 20}...{f'{i + 1:02x}' * 20})"
    for i in range(16)
)


def test_an_overlong_function_and_commit_are_fitted_at_extraction_so_validation_passes(
    make_repo, tmp_path: Path, budget: TokenBudget
) -> None:
    from tasks.validate.run import failure_message, validate_dataset

    repo = make_repo({**_files(), "pkg/table.py": OVERLONG_PY})
    commit(repo, {"requirements/pins.txt": _PINS}, BUMP_MESSAGE)
    assert budget.count([[{"role": "user", "content": OVERLONG_PY}]])[0] > budget.max_tokens
    out = tmp_path / "ds"
    stats = extract_dataset(repo, out, ExtractConfig(), tmp_path / "cache", budget).model_dump()
    written = ExtractReport.model_validate_json(
        (out / "stats.json").read_text()
    )  # the typed report is the file
    assert written.model_dump() == {**stats, "elapsed_seconds": None}

    # explain, docstring and implement of lookup_table show its whole body: no cut fits, they are dropped
    assert stats["dropped"]["over_token_budget"] == 3
    train, evals, _ = _read(out)
    table = [s["meta"]["task"] for s in train + evals if s["meta"]["source_path"] == "pkg/table.py"]
    assert table == ["locate"]
    # the commit's diff stays whole; its message is cut after the paragraphs that fit
    assert stats["token_budget"]["cut"] == 1
    (bump,) = [s["messages"][1]["content"] for s in train + evals if s["meta"]["task"] == "commit"
               and s["messages"][1]["content"].startswith(BUMP_SUBJECT)]  # fmt: skip
    assert len(bump) < len(BUMP_MESSAGE) and BUMP_MESSAGE.startswith(bump + "\n\nUpdates `pkg")
    assert stats["token_budget"]["max"] <= budget.max_tokens

    report = validate_dataset(out, ValidateConfig(), budget)
    assert report.passed, failure_message(report)
    assert report.token_stats["max"] == stats["token_budget"]["max"]  # both stages count alike


# a definition's heading: "[1] `f` is defined in `a.py` at line 3 (function, to line 9)"; the others:
# "[2] a.py:1-40 (module)"
CHUNK_HEAD = re.compile(
    r"^\[\d+\] (?:`[^`]+` is defined in `(?P<dpath>[^`]+)` at line (?P<dline>\d+)"
    r"|(?P<path>\S+?):(?P<line>\d+)-\d+) \(",
    re.M,
)


def _shown(context: str) -> set[tuple[str, int]]:
    """(path, first line) of every chunk a context shows."""
    return {(m["dpath"] or m["path"], int(m["dline"] or m["line"])) for m in CHUNK_HEAD.finditer(context)}


def test_a_share_of_samples_carry_the_context_serving_would_give(
    repo: Path, tmp_path: Path, budget: TokenBudget
) -> None:
    out = tmp_path / "ds"
    cfg = ExtractConfig(eval_fraction=0.3, context_share=0.6, distractor_share=0.25)
    stats = extract_dataset(repo, out, cfg, tmp_path / "cache", budget).model_dump()
    train, evals, _ = _read(out)
    with_context = [s for s in train + evals if s["meta"].get("context")]

    assert stats["context"]["oracle"] > 0 and stats["context"]["distractors"] > 0
    assert sum(stats["context"].values()) == len(with_context)
    for s in with_context:
        system, user, answer = s["messages"]
        assert system["role"] == "system" and system["content"].startswith(INSTRUCTION)
        assert s["meta"]["task"] in ("locate", "explain", "doc_qa", "summarize_module")
        shown = _shown(system["content"])
        oracle = (s["meta"]["source_path"], s["meta"]["lines"][0])
        if s["meta"]["context"] == "oracle":
            assert oracle in shown  # the chunk that answers the question, headed by path and lines
        else:
            assert oracle not in shown
        assert budget.count([s["messages"]])[0] <= budget.max_tokens  # the budget counts the context


def test_training_contexts_never_show_a_held_out_file(
    repo: Path, tmp_path: Path, budget: TokenBudget
) -> None:
    out = tmp_path / "ds"
    cfg = ExtractConfig(eval_fraction=0.3, context_share=1.0, distractor_share=0.5)
    extract_dataset(repo, out, cfg, tmp_path / "cache", budget)
    train, evals, _ = _read(out)
    held_out = {s["meta"]["source_path"] for s in evals}

    contexts = [s["messages"][0]["content"] for s in train if s["meta"].get("context")]
    assert held_out and contexts
    shown = {p for c in contexts for p, _ in _shown(c)}
    assert not shown & held_out


def test_no_context_share_leaves_every_sample_without_context(
    repo: Path, tmp_path: Path, budget: TokenBudget
) -> None:
    out = tmp_path / "ds"
    stats = extract_dataset(repo, out, ExtractConfig(context_share=0.0), tmp_path / "cache", budget)
    train, evals, _ = _read(out)
    assert stats.context == {} and all(s["messages"][0]["role"] == "user" for s in train + evals)
