"""The code and machine a run records in its manifest (``irmscope.provenance``)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from irmscope.models.precision import native_bfloat16
from irmscope.provenance import checkout_commit, code_commit, cpu_kind, describe_machine
from irmscope.report.run_report import _provenance

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="no git on this machine")


#: a committer for the test repositories (a clean machine has none configured)
IDENTITY = {
    f"GIT_{who}_{what}": value
    for who in ("AUTHOR", "COMMITTER")
    for what, value in (("NAME", "t"), ("EMAIL", "t@t"))
}


def _git(folder: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(folder), *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **IDENTITY},
    )
    return done.stdout.strip()


@needs_git
def test_a_checkout_gives_its_commit_and_whether_tracked_files_changed(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "pkg" / "code.py").write_text("x = 1\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")
    assert checkout_commit(repo / "pkg") == {"commit": head, "modified": False}
    (repo / "runs").mkdir()
    (repo / "runs" / "results.json").write_text("{}")  # untracked output does not make the code modified
    assert checkout_commit(repo / "pkg") == {"commit": head, "modified": False}
    (repo / "pkg" / "code.py").write_text("x = 2\n")
    assert checkout_commit(repo / "pkg") == {"commit": head, "modified": True}


@needs_git
def test_a_package_installed_inside_another_checkout_has_no_commit(tmp_path):
    """git finds the repository of any folder above: a wheel installed into a virtual environment inside a
    user's own project must not report that project's commit as irmscope's."""
    repo = tmp_path / "project"
    installed = repo / ".venv" / "site-packages" / "irmscope"
    installed.mkdir(parents=True)
    (installed / "provenance.py").write_text("# installed\n")
    (repo / ".gitignore").write_text(".venv/\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".gitignore")
    _git(repo, "commit", "-q", "-m", "the user's project")
    assert checkout_commit(installed)["commit"] == _git(repo, "rev-parse", "HEAD")  # what git alone says
    assert checkout_commit(installed, tracking=installed / "provenance.py") is None


@needs_git
def test_outside_a_checkout_or_before_the_first_commit_there_is_no_commit(tmp_path):
    assert checkout_commit(tmp_path) is None
    _git(tmp_path, "init", "-q")
    assert checkout_commit(tmp_path) is None


def test_the_machine_is_described_by_the_helpers_the_pipeline_uses():
    machine = describe_machine()
    assert machine["kind"] == cpu_kind() and machine["native_bfloat16"] == native_bfloat16("cpu")
    assert machine["cpu"] and machine["cores"] >= 1 and machine["torch_threads"] >= 1


def test_the_report_names_the_code_and_machine_or_says_they_were_not_recorded():
    machine = {
        "cpu": "AMD EPYC",
        "kind": "AuthenticAMD-AVX512",
        "native_bfloat16": True,
        "cores": 2,
        "torch_threads": 2,
    }
    said = _provenance({"code": {"commit": "0123456789abcdef", "modified": True}, "machine": machine})
    assert (
        "commit 0123456789ab, with uncommitted changes" in said
        and "AuthenticAMD-AVX512, native bfloat16" in said
    )
    assert "no git commit" in _provenance({"code": None, "machine": machine})
    assert "not recorded" in _provenance({"versions": {}})


def test_this_process_reports_the_commit_of_its_own_checkout():
    """The tests run from a git checkout of irmscope (CI clones it): the manifest's commit is its HEAD."""
    expected = checkout_commit(Path(__file__).parent)
    if expected is None:
        pytest.skip("the tests are not in a git checkout")
    assert code_commit()["commit"] == expected["commit"]
