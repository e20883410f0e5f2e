"""README.md and docs/*.md name only what exists (our commands' flags, repository paths,
prefect.yaml's deployments). Flags count where the command is ours (``python flows/x.py``,
``curator-stages``, ``python -m curator_stages...``); a bare flag span in prose belongs to the
last command before it in its paragraph or table row (ours when none); other tools' are skipped."""

from __future__ import annotations

import argparse
import functools
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from curator_stages.cli import _parser, load_target
from curator_stages.orchestration.flow_cli import help_epilog
from curator_stages.orchestration.params import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^[ \t]*```\w*\n(.*?)^[ \t]*```", re.S | re.M)
OURS = re.compile(r"(?<![\w/.-])(?:(?:python3? )?(flows/\S+\.py)|python3? -m (curator_stages[\w.]*)"
                  r"|(curator-stages))(?![\w/-])(.*)")
FLAG = re.compile(r"(?:^|\s)[\[(]?(--[a-z0-9][\w-]*)")
PATH = re.compile(r"(?<![\w/.$<-])((?:\.ci|benchmarks|curator_stages|data|docs|examples|flows|"
                  r"scripts|tests)/[^\s`'\"()\[\]#:]*)")


def split_doc(text: str) -> tuple[list[str], list[str]]:  # (fenced blocks, prose paragraphs)
    return ([textwrap.dedent(b) for b in FENCE.findall(text)],
            re.split(r"\n\s*\n|\n(?=\|)", FENCE.sub("", text)))


def spans(paragraph: str) -> list[str]:
    return [s.replace("\n", " ") for s in re.findall(r"`([^`]+)`", paragraph)]


@functools.lru_cache(maxsize=None)
def flow_flags(script: str) -> frozenset[str]:  # its parameter model's and epilog's ("  --plan")
    if not (REPO / script).is_file():
        return frozenset()
    spec = load_target(str(REPO / script))[1]
    epilog = re.findall(r"^\s+(--[\w-]+)", help_epilog(spec), re.M)
    return frozenset(build_parser(spec.params_model)._option_string_actions) | set(epilog)


def cli_flags(words: list[str]) -> frozenset[str]:  # of the curator-stages (sub)command named
    parser = _parser()
    for word in words:
        subs = next((a.choices for a in parser._actions
                     if isinstance(a, argparse._SubParsersAction)), {})
        if word not in subs:
            break
        parser = subs[word]
    return frozenset(parser._option_string_actions)


@functools.lru_cache(maxsize=None)
def module_flags(module: str) -> frozenset[str]:  # what its --help names
    return frozenset(re.findall(r"--[\w-]+", subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True).stdout))


def command_flags(snippet: str) -> tuple[str, frozenset[str], list[str]] | None:
    """(command, flags it takes, flags given) if the snippet runs ours, up to ``#``/``&&``/...."""
    if (m := OURS.search(snippet)) is None:
        return None
    script, module, _, rest = m.groups()
    rest = re.split(r"\s#|&&|;|\s\|\s|\s&\s", rest)[0]
    taken = (flow_flags(script) if script else module_flags(module) if module
             else cli_flags(rest.split()))
    return m.group(0)[:m.start(4) - m.start()], taken, FLAG.findall(rest)


def runs_another_program(span: str) -> bool:  # a script, or a program on PATH with arguments
    words = [w for w in span.split() if not re.fullmatch(r"\w+=\S*", w)] or [""]  # after VAR=x
    return words[0].endswith(".py") or len(words) > 1 and bool(shutil.which(words[0]))


def test_every_flag_the_docs_give_our_commands_exists():
    flows = [f"flows/{p.name}" for p in (REPO / "flows").glob("[!_]*.py")]
    ours = frozenset().union(*map(flow_flags, flows),
                             *(cli_flags(c.split()) for c in ("", "plan", "report", "ray start")))
    wrong, checked = [], 0
    for doc in DOCS:
        blocks, paragraphs = split_doc(doc.read_text())
        uses = [command_flags(ln) for b in blocks for ln in b.replace("\\\n", " ").splitlines()]
        for paragraph in paragraphs:
            context: frozenset[str] | None = ours
            for span in spans(paragraph):
                if span.startswith("--"):
                    uses.append(context and ("(prose)", context, FLAG.findall(span)[:1]))
                elif (use := command_flags(span)) is not None:
                    uses.append(use)
                    context = use[1]
                elif runs_another_program(span):
                    context = None  # its flags are not ours
        for command, taken, given in filter(None, uses):
            checked += len(given)
            wrong += [f"{doc.name}: {command} {f}" for f in given if f not in taken]
    assert checked > 50, "the docs' commands were not found: is the extraction broken?"
    assert not wrong, "flags the docs name that the command does not take:\n" + "\n".join(wrong)


def test_every_repository_path_the_docs_name_exists():
    missing, checked = [], 0
    for doc in DOCS:
        text = doc.read_text()
        named = [(REPO, p.rstrip(".,;")) for p in PATH.findall(text)]
        named += [(doc.parent, t) for t in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
                  if "://" not in t]  # links, relative to the doc
        for base, path in filter(lambda n: not re.search(r"[<>*]|\.\.\.|…", n[1]), named):
            brace = re.search(r"\{([^}]*)\}|$", path)  # dir/{a,b}.py: dir/a.py, dir/b.py
            for alt in (brace.group(1) or "").split(","):
                one = path[:brace.start()] + alt + path[brace.end():]
                checked += 1
                missing += [] if (base / one).exists() else [f"{doc.name}: {one}"]
    assert checked > 30, "no paths found: is the extraction broken?"
    assert not missing, "paths the docs name that do not exist:\n" + "\n".join(missing)


def test_every_deployment_the_docs_name_is_in_prefect_yaml():
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    names = {d["name"] for d in deployments}
    runs = {f"{load_target(str(REPO / d['entrypoint']))[1].name}/{d['name']}"
            for d in deployments}  # what `prefect deployment run 'flow/deployment'` takes
    count = {str(len(deployments)), "zero one two three four five six".split()[len(deployments)]}
    wrong, checked = [], 0
    for doc in DOCS:
        text = doc.read_text()
        blocks, paragraphs = split_doc(text)
        claims = [(d["name"], names) for b in blocks if b.startswith("deployments:")
                  for d in yaml.safe_load(b)["deployments"]]  # a prefect.yaml excerpt
        claims += [(r, runs) for r in re.findall(r"deployment run '([^']+)'", text)]
        for paragraph in paragraphs:  # "prefect.yaml holds four deployments: `a`, `b` ..."
            for listed in re.findall(r"deployments: (.*?)(?:\.\s+[A-Z]|$)", paragraph, re.S):
                claims += [(s, names) for s in spans(listed)
                           if re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)+", s)]
        claims += [(said, count) for said in
                   re.findall(r"prefect\.yaml`? (?:holds|has|defines) (\w+) deployments", text)]
        checked += len(claims)
        wrong += [f"{doc.name}: {c} (prefect.yaml: {sorted(ok)})" for c, ok in claims
                  if c not in ok]
    assert checked >= 4, "no deployment names found: is the extraction broken?"
    assert not wrong, "deployments the docs name that prefect.yaml lacks:\n" + "\n".join(wrong)
