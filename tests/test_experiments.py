"""The recorded experiments load, and the published documents cite no machine-specific source.

Every number in README.md and docs/ must come with a committed config under experiments/ and the command
that regenerates it; these checks keep the configs valid and keep out paths of a particular machine, scratch
folders, issue notes as sources, and papers cited by an internal seed number.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from irmscope.config import RunConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))
PUBLISHED = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *EXPERIMENTS]
FORBIDDEN = ("/work/", "/tmp/", "closing note")


def test_there_are_experiments() -> None:
    assert {p.name for p in EXPERIMENTS} >= {"vader.yaml", "planted.yaml"}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_each_experiment_loads(path: Path) -> None:
    config = load_config("demo", path)
    assert isinstance(config, RunConfig)
    assert not Path(config.out_dir).is_absolute(), "runs go under a relative folder such as runs/NAME"
    if config.model.tuned is not None:
        assert not Path(config.model.tuned).is_absolute()


@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_machine_specific_source(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    found = [needle for needle in FORBIDDEN if needle in text]
    assert not found, f"{path.relative_to(ROOT)} cites {found}: cite a committed config and its command"


def test_papers_are_cited_by_title_not_seed_number() -> None:
    files = [ROOT / "README.md", *sorted((ROOT / "src" / "irmscope").rglob("*.py"))]
    cited = [str(p.relative_to(ROOT)) for p in files if "seed 00" in p.read_text(encoding="utf-8")]
    assert not cited, f"cite the paper by title and authors, not 'seed 00N': {cited}"


def test_findings_name_each_experiment() -> None:
    findings = (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
    for path in EXPERIMENTS:
        assert f"experiments/{path.name}" in findings
