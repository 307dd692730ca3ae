"""The docs name only things that exist: CLI commands and flags, repository files, Helm values, make targets.

Read from README.md and docs/*.md: inline code spans and fenced code blocks. Each check names
the document and the statement, so a rename in the code points at the sentence to fix.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
EXTENSIONS = (".py", ".yaml", ".yml", ".lua", ".sh", ".md", ".json", ".toml", ".env", ".png", ".txt", ".tpl")
TOP_DIRS = ("operator/", "worker_image/", "crds/", "helm/", "tests/", "hack/", "docs/", "examples/",
            "benchmarks/", ".ci/")
# Paths that exist only at run time (state, caches, results), not in the repository.
RUNTIME = (".local/", ".venv/", "benchmarks/results/", "~", "/", "$")
# The documents about the chart, where a bare `redis.url` means the Helm value.
CHART_DOCS = ("docs/install.md", "docs/security.md", "README.md")


def code_spans(text: str) -> Iterator[str]:
    """Inline code spans, then the lines of fenced code blocks (continuations joined)."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    yield from re.findall(r"`([^`\n]+)`", prose)
    for block in blocks:
        command = ""
        for line in block.splitlines():
            if command and (line.startswith((" ", "\t")) or command.endswith("\\")):
                command = command.rstrip("\\") + " " + line.strip()
                continue
            if command:
                yield command
            command = line.strip()
        if command:
            yield command


def statements() -> Iterator[tuple[str, str]]:
    for doc in DOCS:
        for span in code_spans(doc.read_text()):
            yield doc.relative_to(REPO).as_posix(), span


# --------------------------------------------------------------------------- CLI


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {name: p for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name, p in action.choices.items()}


def flags(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings}


def operator_flags() -> set[str]:
    from kubeworkers_operator.cli import parse_args

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        parse_args(["--help"])
    return set(re.findall(r"(--[a-z][a-z-]*)", out.getvalue())) | {"-n", "-h"}


def cli_problems() -> list[str]:
    from kubeworkers.cli import build_parser

    root = build_parser()
    commands = subcommands(root)
    problems = []
    for doc, span in statements():
        for line in span.split(" | ") if span.removeprefix("$ ").startswith("kubeworkers ") else [span]:
            # docs/cli.md shows terminal sessions: `$ kubeworkers ...` is a command too.
            words = line.removeprefix("$ ").replace("python -m kubeworkers ", "kubeworkers ").split()
            if not words:
                continue
            if words[0] == "kubeworkers-operator":
                unknown = {w.split("=")[0].strip("[]") for w in words[1:] if w.strip("[").startswith("-")}
                unknown -= operator_flags()
                problems += [f"{doc}: `{line}`: kubeworkers-operator has no flag {f}" for f in sorted(unknown)]
                continue
            if words[0] != "kubeworkers" or len(words) < 2:
                continue
            if any(w.endswith(":") for w in words[1:3]):
                continue  # an error line a command printed (`kubeworkers jobs retry: job x: not found`)
            # `kubeworkers worker|submit|handlers` lists commands; `kubeworkers dlq list`, a subcommand.
            for name in words[1].split("|"):
                parser = commands.get(name)
                if parser is None:
                    problems.append(f"{doc}: `{line}`: no command `kubeworkers {name}` "
                                    f"(there are: {', '.join(sorted(commands))})")
                    continue
                if "|" in words[1]:
                    continue
                rest = words[2:]
                nested = subcommands(parser)
                if nested and rest and not rest[0].startswith("-"):
                    if rest[0] not in nested:
                        problems.append(f"{doc}: `{line}`: no command `kubeworkers {name} {rest[0]}`")
                        continue
                    parser = nested[rest[0]]
                known = flags(parser)
                for word in rest:
                    flag = word.split("=")[0].strip("[]")
                    if flag.startswith("--") and flag not in known:
                        problems.append(f"{doc}: `{line}`: `kubeworkers {name}` has no flag {flag}")
    return problems


def test_every_cli_command_subcommand_and_flag_the_docs_mention_exists() -> None:
    assert not (problems := cli_problems()), "\n".join(problems)


def test_docs_cli_md_shows_every_jobs_and_dlq_subcommand() -> None:
    from kubeworkers.cli import build_parser

    commands = subcommands(build_parser())
    text = (REPO / "docs" / "cli.md").read_text()
    missing = [f"kubeworkers {group} {name}" for group in ("jobs", "dlq") for name in subcommands(commands[group])
               if f"$ kubeworkers {group} {name}" not in text]
    assert not missing, f"docs/cli.md shows no recorded run of: {', '.join(missing)}"


# --------------------------------------------------------------------------- files


def tracked_files() -> list[str]:
    return subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()


def path_tokens(span: str) -> Iterator[str]:
    for word in re.split(r"[\s,()]+", span):
        token = word.split("::")[0].strip("`'\"").rstrip(".;:")
        if not re.fullmatch(r"[\w./~$-]+", token) or token.startswith(("http", "-")):
            continue
        if token.startswith(RUNTIME):
            continue
        if token.endswith(EXTENSIONS) or token.startswith(TOP_DIRS):
            yield token


def file_problems() -> list[str]:
    files = tracked_files()
    basenames = {f.rsplit("/", 1)[-1] for f in files}
    problems = []
    for doc, span in statements():
        for token in path_tokens(span):
            path = token.rstrip("/")
            if "/" not in path:
                found = path in basenames or any(f.startswith(path + "/") for f in files)
            else:
                found = any(f == path or f.endswith("/" + path) or f.startswith(path + "/")
                            or ("/" + path + "/") in ("/" + f) for f in files)
            if not found:
                problems.append(f"{doc}: `{span}`: no file or folder {token} in the repository")
    return problems


def test_every_repository_file_the_docs_mention_exists() -> None:
    assert not (problems := file_problems()), "\n".join(problems)


# --------------------------------------------------------------------------- Helm values and make


def values_problems() -> list[str]:
    values = yaml.safe_load((REPO / "helm" / "kubeworkers" / "values.yaml").read_text())
    problems = []
    for doc, span in statements():
        # A value is named as `key=...` or `--set key...` anywhere, or as a bare `key` in the chart's docs.
        chart_doc = doc in CHART_DOCS or "--set" in span
        for key, assigned in re.findall(r"(?<![\w./-])([a-z][A-Za-z]*(?:\.[A-Za-z][A-Za-z0-9]*)+)(=?)", span):
            if key.endswith(EXTENSIONS) or not (assigned or chart_doc):
                continue
            head, *rest = key.split(".")
            if head not in values or not isinstance(values[head], dict):
                continue
            node = values[head]
            for part in rest:
                if not isinstance(node, dict) or part not in node:
                    problems.append(f"{doc}: `{span}`: no Helm value {key} in helm/kubeworkers/values.yaml")
                    break
                node = node[part]
    return problems


def test_every_helm_value_the_docs_mention_exists_in_values_yaml() -> None:
    assert not (problems := values_problems()), "\n".join(problems)


def test_every_make_target_the_docs_mention_exists() -> None:
    targets = set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), re.M))
    problems = [f"{doc}: `{span}`: no make target {target}" for doc, span in statements()
                for target in re.findall(r"\bmake ([a-z][\w-]*)", span) if target not in targets]
    assert not problems, "\n".join(problems)
